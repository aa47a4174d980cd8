from __future__ import annotations

import hashlib
import json
import logging
import uuid
from datetime import timedelta

import psycopg
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone
from psycopg.types.json import Jsonb
from rest_framework.exceptions import AuthenticationFailed

from apps.audit.services import AuditEntry, audit_record_many
from apps.core.encryption import seal
from apps.core.exceptions import Conflict
from apps.core.hints import hint_many_on_commit
from apps.tenants.models import ApiKey
from apps.tenants.principals import Tenant
from apps.workflows.selectors import workflow_version_for_trigger

from .engine import (  # noqa: F401 (the tasks' entry points)
    ProductSlices,
    run_execute,
    runs_deliveries_settled,
    runs_enqueue,
    runs_enqueue_on_commit,
    runs_execute,
)
from .models import RequestStatus, Run, RunStatus, TriggerRequest
from .triggers.api import requests_start
from .triggers.database import runs_for_events  # noqa: F401 (each trigger source launches its runs)

logger = logging.getLogger(__name__)


def _body_hash(*, workflow: str, recipients: list, data: dict, priority: str) -> str:
    canonical = json.dumps(
        {"workflow": workflow, "to": recipients, "data": data, "priority": priority},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


# One statement, one round trip, its own transaction: the request, its audit row, the published
# version it runs, and the proof that the caller's key is still live (not revoked, not expired).
# Nothing is written unless all of it holds; `_trigger_refused` then finds out why.
TRIGGER_INSERT = """
WITH req AS (
    INSERT INTO runs_triggerrequest (id, product_id, organization_id, workflow_version_id, priority, recipients,
                                     data, idempotency_key, body_hash, status, actor, enqueued_at, created_at)
    SELECT %(id)s::uuid, w.product_id, %(organization_id)s::uuid, w.published_version_id, %(priority)s::text,
           %(recipients)s::jsonb, %(data)s::jsonb, %(idempotency_key)s::text, %(body_hash)s::text, 'accepted',
           %(actor)s::text, NULL, now()
    FROM workflows_workflow w
    JOIN workflows_workflowversion pv ON pv.id = w.published_version_id
    WHERE w.product_id = %(product_id)s::uuid AND w.key = %(workflow)s::text
      AND coalesce(pv.definition -> 'trigger' ->> 'type', 'api') = 'api'
      AND (%(key_id)s::text = '' OR EXISTS (
          SELECT 1 FROM tenants_apikey k
          WHERE k.id = %(key_id)s::text AND NOT k.revoked AND (k.expiry_date IS NULL OR k.expiry_date > now())))
    ON CONFLICT DO NOTHING
    RETURNING id, workflow_version_id
), audit AS (
    INSERT INTO audit_auditevent (created_at, product_id, organization_id, actor, action, target_type, target_id,
                                  data)
    SELECT now(), %(product_id)s::uuid, %(organization_id)s::uuid, %(actor)s::text, 'request.accepted', 'request',
           req.id::text, jsonb_build_object('workflow', %(workflow)s::text, 'version', v.version,
                                            'recipients', %(recipient_count)s::int, 'priority', %(priority)s::text)
    FROM req JOIN workflows_workflowversion v ON v.id = req.workflow_version_id
)
SELECT id FROM req
"""


# Requests one dispatcher pass claims at most, and request ids per Celery hint.
DISPATCH_LIMIT = 1000
DISPATCH_BATCH = 50


# A pass hints requests once a hint's worth (DISPATCH_BATCH) waits, or once the oldest has waited
# DISPATCH_LINGER seconds: under load a task then starts a batch of requests instead of one or two (each
# task costs a Celery round of its own), for at most DISPATCH_LINGER more latency when traffic is light.
DISPATCH_LINGER = 0.02

# One statement (its own transaction): mark up to %(limit)s accepted requests that nobody has hinted yet,
# high priority first, oldest first, skipping rows another dispatcher holds, and return them; nothing while
# fewer than %(batch)s wait, all younger than %(linger)s seconds. The partial index `request_undispatched`
# holds exactly the rows it reads. The CTEs run once (a subquery with LIMIT and SKIP LOCKED could run again).
_DISPATCH = """
WITH waiting AS MATERIALIZED (
    SELECT id, created_at FROM runs_triggerrequest
    WHERE status = 'accepted' AND enqueued_at IS NULL
    ORDER BY CASE priority WHEN 'high' THEN 0 WHEN 'normal' THEN 1 ELSE 2 END, created_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), picked AS MATERIALIZED (
    SELECT id FROM waiting
    WHERE (SELECT count(*) FROM waiting) >= %(batch)s
       OR (SELECT min(created_at) FROM waiting) <= now() - make_interval(secs => %(linger)s)
)
UPDATE runs_triggerrequest r SET enqueued_at = now()
FROM picked
WHERE r.id = picked.id
RETURNING r.id, r.priority, r.created_at
"""


def requests_dispatch(*, limit: int = DISPATCH_LIMIT, linger: float | None = None) -> int:
    """Hint workers about accepted requests nobody has hinted yet; return how many.

    1. Mark up to `limit` undispatched requests hinted, high priority first, oldest first, skipping rows
       another dispatcher holds (SKIP LOCKED): one statement, one round trip. Nothing is marked while
       fewer than DISPATCH_BATCH wait and none has waited `linger` seconds (default DISPATCH_LINGER).
    2. Once that commits, send one hint per batch of DISPATCH_BATCH ids to the queue of their priority,
       in one round trip.
    A hint lost after this (Redis restarted) is re-sent by the reconciler. A worker that takes up a hint
    also takes other hinted requests that wait (apps.runs.triggers.api), so under load its batches grow.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            _DISPATCH,
            {
                "limit": limit,
                "batch": min(DISPATCH_BATCH, limit),
                "linger": DISPATCH_LINGER if linger is None else linger,
            },
        )
        rows = sorted(cursor.fetchall(), key=lambda r: r[2])
    if not rows:
        return 0
    claimed: dict[str, list[str]] = {}
    for request_id, priority, _ in rows:
        claimed.setdefault(priority, []).append(str(request_id))
    hints = [
        ("apps.runs.tasks.requests_start", [ids[i : i + DISPATCH_BATCH]], priority)
        for priority, ids in claimed.items()
        for i in range(0, len(ids), DISPATCH_BATCH)
    ]
    hint_many_on_commit(hints)
    return len(rows)


def recipients_sealed(recipients: list[dict]) -> list[dict]:
    """The recipients with each `chat_webhook` (an incoming-webhook URL: a bearer credential) sealed
    (apps.core.encryption.seal), so that the request, its runs and their deliveries store ciphertext only."""
    if not any("chat_webhook" in r for r in recipients):
        return recipients
    return [
        {**r, "chat_webhook": seal(r["chat_webhook"])} if isinstance(r.get("chat_webhook"), str) else r
        for r in recipients
    ]


def trigger_create(
    *,
    tenant: Tenant,
    workflow: str,
    recipients: list[dict],
    data: dict,
    priority: str,
    idempotency_key: str | None = None,
) -> tuple[uuid.UUID, bool]:
    """Accept a trigger call: record it with its audit row and queue it. Returns (request id, created).

    The same idempotency key with the same body returns the first request and starts nothing; with
    another body it is a Conflict. An unknown or unpublished workflow is InvalidInput on `workflow`.
    """
    body_hash = _body_hash(workflow=workflow, recipients=recipients, data=data, priority=priority)
    # Hashed in clear (a sealed value differs at each call: a repeated call must match), stored sealed.
    recipients = recipients_sealed(recipients)
    params = {
        "id": uuid.uuid4(),
        "key_id": tenant.key_id,
        "product_id": tenant.product_id,
        "organization_id": tenant.organization_id,
        "workflow": workflow,
        "priority": priority,
        "recipients": Jsonb(recipients),
        "data": Jsonb(data),
        "idempotency_key": idempotency_key,
        "body_hash": body_hash,
        "actor": tenant.actor,
        "recipient_count": len(recipients),
    }
    # A single statement is atomic on its own: no BEGIN/COMMIT round trips around it. It runs as a
    # server-side prepared statement (planned once per connection): Django binds parameters on the
    # client, which makes PostgreSQL plan this CTE on every call, its largest cost (3,100 against
    # 8,200 statements/s in pgbench on this machine).
    # wrap_database_errors: psycopg errors become Django's, and a broken connection is discarded.
    with connection.wrap_database_errors:
        connection.ensure_connection()
        with psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(TRIGGER_INSERT, params, prepare=True)
            row = cursor.fetchone()
    if row is not None:
        # No hint from here: the dispatcher picks new requests up in batches (see requests_dispatch).
        return row[0], True
    return _trigger_refused(
        tenant=tenant, workflow=workflow, body_hash=body_hash, idempotency_key=idempotency_key
    ), False


def _trigger_refused(*, tenant: Tenant, workflow: str, body_hash: str, idempotency_key: str | None):
    """Why the trigger statement wrote nothing: a dead key, a repeated idempotency key, or a workflow
    that does not exist or is not published."""
    if (
        tenant.key_id
        and not ApiKey.objects.filter(id=tenant.key_id, revoked=False)
        .filter(Q(expiry_date__isnull=True) | Q(expiry_date__gt=timezone.now()))
        .exists()
    ):
        raise AuthenticationFailed("Invalid API key.")
    if idempotency_key:
        existing = (
            TriggerRequest.objects.filter(
                product_id=tenant.product_id, organization_id=tenant.organization_id, idempotency_key=idempotency_key
            )
            .values("id", "body_hash")
            .first()
        )
        if existing:
            if existing["body_hash"] != body_hash:
                raise Conflict(
                    "This Idempotency-Key was already used with a different request body.", field="Idempotency-Key"
                )
            return existing["id"]
    workflow_version_for_trigger(tenant=tenant, key=workflow)  # raises the precise InvalidInput
    raise Conflict("The workflow changed while the request was recorded; retry it.")


def request_start(*, request_id) -> list[int]:
    """requests_start for one request: create its runs and execute them; return their ids."""
    return requests_start(request_ids=[request_id])


def runs_reconcile() -> dict[str, int]:
    """Repair work whose Celery message was lost or whose worker died.

    1. Accepted requests whose hint is older than ROWBELL_REQUEUE_AFTER_SECONDS: hint again.
    2. Queued runs likewise.
    3. Running runs whose lease has expired: back to queued (their in-flight step was rolled back).
    """
    now = timezone.now()
    stale = now - timedelta(seconds=settings.ROWBELL_REQUEUE_AFTER_SECONDS)
    with transaction.atomic():
        requests = list(
            TriggerRequest.objects.select_for_update(skip_locked=True)
            .filter(status=RequestStatus.ACCEPTED, enqueued_at__lt=stale)
            .values_list("id", "priority")[:10_000]
        )
        TriggerRequest.objects.filter(id__in=[r for r, _ in requests]).update(enqueued_at=now)

        expired = list(
            Run.objects.select_for_update(skip_locked=True)
            .filter(status=RunStatus.RUNNING, lease_until__lt=now)
            .values_list("id", flat=True)[:10_000]
        )
        Run.objects.filter(id__in=expired).update(status=RunStatus.QUEUED, lease_until=None, enqueued_at=None)
        audit_record_many(
            [
                AuditEntry(action="run.requeued", target_type="run", target_id=run_id, data={"reason": "lease expired"})
                for run_id in expired
            ]
        )

        runs = list(
            Run.objects.select_for_update(skip_locked=True)
            .filter(status=RunStatus.QUEUED)
            .exclude(enqueued_at__gte=stale)
            .values_list("id", "priority")[:10_000]
        )
        Run.objects.filter(id__in=[r for r, _ in runs]).update(enqueued_at=now)

        settled = _runs_waiting_on_settled_deliveries(stale)

        hint_many_on_commit(
            [("apps.runs.tasks.requests_start", [[str(request_id)]], priority) for request_id, priority in requests]
        )
        by_priority: dict[str, list[int]] = {}
        for run_id, priority in runs:
            by_priority.setdefault(priority, []).append(run_id)
        for priority, ids in by_priority.items():
            runs_enqueue_on_commit(ids, priority)
    # Requests no dispatcher has claimed (e.g. no dispatcher process runs): the beat tick does it, for
    # everything that waits.
    dispatched = requests_dispatch(linger=0)
    return {
        "requests": len(requests),
        "runs_requeued": len(expired),
        "runs": len(runs),
        "dispatched": dispatched,
        "runs_settled": settled,
    }


def _runs_waiting_on_settled_deliveries(stale) -> int:
    """Runs still waiting for a delivery that is already final (a path that finalized it without moving
    the run on): settle them as the delivery ended."""
    from django.db.models import Exists, OuterRef

    from apps.deliveries.models import INTENDED_SKIP_STATUSES, SUCCESS_STATUSES, Delivery, DeliveryStatus

    pending = Delivery.objects.filter(
        run=OuterRef("pk"), status__in=(DeliveryStatus.QUEUED, DeliveryStatus.HELD, DeliveryStatus.SENDING)
    )
    stuck = list(
        Run.objects.filter(status=RunStatus.WAITING, waiting_on="delivery", updated_at__lt=stale)
        .exclude(Exists(pending))
        .values_list("id", flat=True)[:1000]
    )
    if not stuck:
        return 0
    last = {}
    for run_id, status, error, step_id, message_id in (
        Delivery.objects.filter(run_id__in=stuck)
        .order_by("id")
        .values_list("run_id", "status", "last_error", "step_id", "message_id")
    ):
        last[run_id] = (status, error, step_id, message_id)
    settled = []
    for run_id in stuck:
        status, error, step_id, message_id = last.get(run_id, ("skipped", "", "", ""))
        ok = status in SUCCESS_STATUSES or status in INTENDED_SKIP_STATUSES
        settled.append((run_id, step_id, ok, f"Step '{step_id}': delivery {message_id} {status}: {error}"))
    runs_deliveries_settled(settled)
    return len(settled)
