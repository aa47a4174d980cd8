"""Operators' actions that reach a customer database, queued from the admin and done by a worker.

The admin never does such network I/O in a request: it calls `action_request`, which writes an audit row
and a QueuedAction in one transaction and hints the worker on commit (Rowbell's own follow-ups, such as
retiring a disabled endpoint's trigger, use `action_queue` inside the transaction that asks for them).
The worker:

1. claims the action (queued -> running, with a lease, bumping `attempt`) only if no older action on the
   same target is unfinished, so that actions on one workflow or endpoint run in the order they were
   asked for;
2. calls the action's service with the action's arguments and the actor;
3. records the outcome (done, failed with the error, or superseded), only if the action still carries its
   claim: a worker whose lease expired while another took the action over records nothing.

A hint lost with Redis, or a worker killed mid-action, is repaired by `queued_actions_reconcile` (beat):
the action is hinted again, so nothing an operator asked for is silently dropped.
"""

from __future__ import annotations

import importlib
import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record

from .hints import hint_many_now, hint_on_commit
from .models import ActionStatus, QueuedAction

logger = logging.getLogger(__name__)

TASK = "apps.core.tasks.queued_action_run"

# name -> "module:function", resolved when the action runs (as Celery resolves task names: the apps that own
# these services build on core, which never imports them). Each takes the action's args as keywords and
# `actor`, and returns a JSON-able outcome. Raising ActionSuperseded marks the action superseded.
ACTIONS = {
    "connection.check": "apps.connections.services:connection_check_now",
    "connection.repair": "apps.connections.services:connection_repair",
    "connection.delete": "apps.connections.services:connection_delete_queued",
    "workflow.publish": "apps.workflows.services:workflow_publish_queued",
    "workflow.unpublish": "apps.workflows.services:workflow_unpublish_queued",
    "workflow.backfill": "apps.runs.triggers.backfill:workflow_backfill_queued",
    "webhook.enable": "apps.deliveries.services:webhook_endpoint_enable_queued",
    "webhook.captures_prune": "apps.subscriptions.services:subscription_captures_prune",
    "webhook.disabled_notify": "apps.deliveries.services:webhook_endpoint_disabled_notify",
}


class ActionSuperseded(Exception):
    """A later change made the action moot; it is recorded as superseded, with this reason."""


def action_queue(*, name: str, target_type: str, target_id, args: dict, actor: str) -> QueuedAction:
    """Record an action for a worker and hint it after commit. Call inside the transaction of the change
    that asks for it."""
    if name not in ACTIONS:
        raise ValueError(f"Unknown action {name}")
    action = QueuedAction.objects.create(
        name=name, target_type=target_type, target_id=str(target_id), args=args, actor=actor, enqueued_at=timezone.now()
    )
    hint_on_commit(TASK, [action.id], queue="low")
    return action


def action_request(
    *,
    name: str,
    target_type: str,
    target_id,
    args: dict,
    actor: str,
    product_id,
    audit_target_id=None,
    audit_data: dict | None = None,
) -> QueuedAction:
    """An operator asks for an action: the audit row (`<name>_requested`, naming the actor) and the queued
    action, in one transaction."""
    with transaction.atomic():
        audit_record(
            action=f"{name}_requested",
            target_type=target_type,
            target_id=audit_target_id if audit_target_id is not None else target_id,
            product_id=product_id,
            actor=actor,
            data=audit_data or {},
        )
        return action_queue(name=name, target_type=target_type, target_id=target_id, args=args, actor=actor)


def _function(name: str):
    module, function = ACTIONS[name].split(":")
    return getattr(importlib.import_module(module), function)


def queued_action_run(*, action_id: int) -> str | None:
    """Do one queued action (see the module's docstring); return its final status, or None when it is not
    (or not yet) this worker's to do."""
    now = timezone.now()
    with transaction.atomic():
        action = (
            QueuedAction.objects.select_for_update(skip_locked=True)
            .filter(id=action_id, status=ActionStatus.QUEUED)
            .first()
        )
        if action is None:
            return None
        earlier = QueuedAction.objects.filter(
            target_type=action.target_type,
            target_id=action.target_id,
            id__lt=action.id,
            status__in=(ActionStatus.QUEUED, ActionStatus.RUNNING),
        ).exists()
        if earlier:
            return None  # its turn comes after theirs: the reconciler hints it again
        action.attempt += 1
        QueuedAction.objects.filter(id=action.id).update(
            status=ActionStatus.RUNNING,
            attempt=action.attempt,
            lease_until=now + timedelta(seconds=settings.ROWBELL_LEASE_SECONDS),
        )
    status, outcome, error = ActionStatus.DONE, None, ""
    try:
        outcome = _function(action.name)(**action.args, actor=action.actor)
    except ActionSuperseded as exc:
        status, error = ActionStatus.SUPERSEDED, str(exc)
    except Exception as exc:  # recorded on the action, for the operator who asked; the worker goes on
        logger.exception("Queued action %s failed", action.id)
        status, error = ActionStatus.FAILED, f"{exc.__class__.__name__}: {exc}"[:2000]
    recorded = QueuedAction.objects.filter(id=action.id, status=ActionStatus.RUNNING, attempt=action.attempt).update(
        status=status, outcome=_jsonable(outcome), error=error, finished_at=timezone.now(), lease_until=None
    )
    if not recorded:
        return None  # taken over after the lease expired: the other worker's outcome is the one
    _next_of(action)
    return status


def _jsonable(outcome):
    from . import exactjson

    try:
        exactjson.dumps(outcome)
        return outcome
    except TypeError:
        return {"result": str(outcome)}


def _next_of(action: QueuedAction) -> None:
    """Hint the next action waiting on the same target at once, rather than at the next reconcile."""
    following = (
        QueuedAction.objects.filter(
            target_type=action.target_type, target_id=action.target_id, status=ActionStatus.QUEUED, id__gt=action.id
        )
        .order_by("id")
        .values_list("id", flat=True)
        .first()
    )
    if following:
        hint_on_commit(TASK, [following], queue="low")


def queued_actions_reconcile() -> int:
    """Hint again the actions whose hint is older than ROWBELL_REQUEUE_AFTER_SECONDS, and put back those
    whose worker died (lease expired); return how many were hinted."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.ROWBELL_REQUEUE_AFTER_SECONDS)
    with transaction.atomic():
        QueuedAction.objects.filter(status=ActionStatus.RUNNING, lease_until__lt=now).update(
            status=ActionStatus.QUEUED, lease_until=None, enqueued_at=None
        )
        ids = list(
            QueuedAction.objects.select_for_update(skip_locked=True)
            .filter(status=ActionStatus.QUEUED)
            .exclude(enqueued_at__gte=stale)
            .order_by("id")
            .values_list("id", flat=True)[:1000]
        )
        QueuedAction.objects.filter(id__in=ids).update(enqueued_at=now)
    hint_many_now([(TASK, [i], "low") for i in ids])  # never raises: a later tick sends what failed
    return len(ids)
