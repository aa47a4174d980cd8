from __future__ import annotations

import json
import logging
from collections import defaultdict
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from apps.audit.services import AuditEntry, audit_record, audit_record_many
from apps.core.bulk import insert_rows
from apps.core.exceptions import InvalidInput, flatten_errors
from apps.core.ids import uuid_or_none
from apps.core.hints import hint_on_commit
from apps.core.masking import url_mask

from . import outbound
from .backoff import retry_delay
from .channels import DeliveryError, Rendered, SendResult, channel_get
from .models import (ENDPOINT_DISABLED, AttemptOutcome, Delivery, DeliveryAttempt, DeliveryEvent, DeliveryStatus,
                     WebhookEndpoint)
from .signing import secret_generate

logger = logging.getLogger(__name__)


# --- Status history -----------------------------------------------------------------------------


def status_events_record(changes, *, at=None, source: str = "rowbell") -> None:
    """Append one DeliveryEvent per (delivery id, new status[, detail]) in one statement. Call in the
    transaction that changes the statuses."""
    if not changes:
        return
    at = (at or timezone.now()).isoformat()
    insert_rows(DeliveryEvent, [{"delivery_id": c[0], "status": c[1], "at": at, "source": source,
                                 "detail": c[2] if len(c) > 2 else {}} for c in changes])


# --- Endpoints ----------------------------------------------------------------------------------


def webhook_endpoint_create(*, product, url: str, description: str = "", accept_any_2xx: bool = False,
                            source: dict | None = None, actor: str) -> WebhookEndpoint:
    """Register a webhook endpoint; its `whsec_` secret is returned on the object once (then only encrypted).

    With a row-event `source`, the table is checked as it is in the customer database and the capture
    is installed there inside the same transaction that saves the endpoint: if the install fails,
    nothing is saved.
    """
    from apps.connections.models import Connection
    from apps.connections.services import connection_captures_install
    from apps.connections.sources import row_source_validate

    try:
        outbound.url_check(url)
    except outbound.DestinationRefused as exc:
        raise InvalidInput(exc.message, field="url") from exc
    connection, capture, normalized = None, None, None
    if source is not None:
        connection_id = source.get("connection") if isinstance(source, dict) else None
        connection = Connection.objects.filter(product=product, id=uuid_or_none(connection_id)).first()
        if connection is None:
            raise InvalidInput("No connection with this id in this product.", field="source.connection")
        normalized, capture = row_source_validate(connection=connection, source=source)
    with transaction.atomic():
        if connection is not None:  # serialize with prunes of this connection (see connection_captures_prune)
            Connection.objects.select_for_update().filter(id=connection.id).first()
        endpoint = WebhookEndpoint.objects.create(
            product=product, url=url, host=(urlsplit(url).hostname or "")[:255], description=description, accept_any_2xx=accept_any_2xx,
            secret=secret_generate(), connection=connection, source=normalized,
            capture=capture.name if capture else "", capture_spec=capture.to_spec() if capture else None)
        audit_record(action="webhook.created", target_type="webhook", target_id=endpoint.id,
                     product_id=product.id, actor=actor,
                     data={"url": url_mask(url), "accept_any_2xx": accept_any_2xx, "source": normalized})
        if capture:
            connection_captures_install(connection=connection, captures=[capture], actor=actor)
    return endpoint


def webhook_endpoint_rotate_secret(*, endpoint: WebhookEndpoint, overlap_seconds: float,
                                   actor: str) -> WebhookEndpoint:
    """Give the endpoint a new `whsec_` secret (returned on the object, once). Messages are signed with
    both the new and the previous secret until the overlap ends, so receivers can switch without missing
    one. A rotation during an overlap replaces the oldest secret."""
    if not 0 <= overlap_seconds <= MAX_SECRET_OVERLAP_SECONDS:
        raise InvalidInput(f"Must be between 0 and {MAX_SECRET_OVERLAP_SECONDS} seconds.", field="overlap_seconds")
    now = timezone.now()
    until = now + timedelta(seconds=overlap_seconds)
    with transaction.atomic():
        locked = WebhookEndpoint.objects.select_for_update().get(id=endpoint.id)
        locked.previous_secret, locked.previous_secret_until = locked.secret, until
        locked.secret = secret_generate()
        locked.save(update_fields=["secret", "previous_secret", "previous_secret_until"])
        audit_record(action="webhook.secret_rotated", target_type="webhook", target_id=endpoint.id,
                     product_id=endpoint.product_id, actor=actor,
                     data={"previous_secret_signs_until": until.isoformat()})
    return locked


MAX_SECRET_OVERLAP_SECONDS = 7 * 24 * 3600
DEFAULT_SECRET_OVERLAP_SECONDS = 24 * 3600


def webhook_endpoint_disable(*, endpoint: WebhookEndpoint, actor: str, reason: str = "") -> WebhookEndpoint:
    """Stop sending to an endpoint. Its row-event trigger is retired in the customer database once no
    enabled endpoint uses it, by a task queued on commit: no customer database is reached in the request."""
    with transaction.atomic():
        _endpoints_disable([endpoint.id], reason=reason or f"Disabled by {actor}.", actor=actor)
    endpoint.refresh_from_db()
    return endpoint


def webhook_endpoint_enable_request(*, endpoint: WebhookEndpoint, actor: str, replay: bool) -> None:
    """Queue enabling an endpoint (which reinstalls its row-event trigger in the customer database), with
    or without replaying what failed meanwhile; see webhook_endpoint_enable."""
    from apps.core.actions import action_request

    action_request(name="webhook.enable", target_type="webhook", target_id=endpoint.id, actor=actor,
                   product_id=endpoint.product_id, audit_data={"replay": replay},
                   args={"endpoint_id": str(endpoint.id), "replay": replay,
                         "requested_at": timezone.now().isoformat()})


def webhook_endpoint_enable_queued(*, endpoint_id, actor: str, replay: bool,
                                   requested_at: str | None = None) -> dict | None:
    """Enable as queued by an operator. Superseded when the endpoint was disabled again after enabling was
    asked for; a refusal (the customer database unreachable) is audited and raised."""
    from apps.core.actions import ActionSuperseded
    from apps.core.exceptions import ApplicationError

    endpoint = WebhookEndpoint.objects.select_related("connection").filter(id=endpoint_id).first()
    if endpoint is None:
        return None
    if requested_at and endpoint.disabled_at and endpoint.disabled_at > datetime.fromisoformat(requested_at):
        raise ActionSuperseded("The endpoint was disabled again after enabling it was asked for.")
    try:
        result = webhook_endpoint_enable(endpoint=endpoint, actor=actor, replay=replay)[1]
    except ApplicationError as exc:
        audit_record(action="webhook.enable_failed", target_type="webhook", target_id=endpoint.id,
                     product_id=endpoint.product_id, actor=actor, data={"error": exc.message})
        raise
    return {**result, "since": result["since"].isoformat() if result["since"] else None}


def _endpoints_disable(endpoint_ids, *, reason: str, actor: str, notify: bool = False, now=None) -> list:
    """Disable the enabled endpoints among `endpoint_ids` with the reason; audit each. With `notify`
    (Rowbell disabled them, not a person), operators are emailed. Both, and retiring a row-event endpoint's
    trigger in the customer database, are queued actions, written in the caller's transaction: done by a
    worker, re-sent if their hint is lost. Call inside a transaction; returns the ids disabled."""
    from apps.core.actions import action_queue

    now = now or timezone.now()
    disabled = list(WebhookEndpoint.objects.filter(id__in=endpoint_ids, enabled=True)
                    .values_list("id", "product_id", "url", "connection_id"))
    if not disabled:
        return []
    WebhookEndpoint.objects.filter(id__in=[d[0] for d in disabled]).update(
        enabled=False, disabled_at=now, disabled_reason=reason[:500])
    audit_record_many([AuditEntry(action="webhook.disabled", target_type="webhook", target_id=endpoint_id,
                                  product_id=product_id, actor=actor,
                                  data={"reason": reason[:500], "url": url_mask(url)})
                       for endpoint_id, product_id, url, _ in disabled])
    for endpoint_id, _, _, connection_id in disabled:
        if connection_id:
            action_queue(name="webhook.captures_prune", target_type="webhook", target_id=endpoint_id,
                         args={"endpoint_id": str(endpoint_id)}, actor=actor)
        if notify:
            action_queue(name="webhook.disabled_notify", target_type="webhook", target_id=endpoint_id,
                         args={"endpoint_id": str(endpoint_id)}, actor=actor)
    return [d[0] for d in disabled]


def webhook_endpoint_captures_prune(*, endpoint_id, actor: str) -> dict:
    """Retire the row-event trigger a disabled endpoint no longer needs (when nothing else uses it). A
    database that cannot be reached fails the queued action, which shows why; the endpoint stays disabled
    and `triggers prune` retires the trigger later."""
    from apps.connections.services import connection_captures_prune

    endpoint = WebhookEndpoint.objects.select_related("connection").filter(id=endpoint_id).first()
    if endpoint is None or endpoint.enabled or not endpoint.connection_id:
        return {"retired": []}
    return {"retired": connection_captures_prune(connection=endpoint.connection, actor=actor)}


def webhook_endpoint_disabled_notify(*, endpoint_id, actor: str = "rowbell") -> None:
    """Tell operators (Django's ADMINS) that Rowbell disabled an endpoint."""
    from django.core.mail import mail_admins

    endpoint = WebhookEndpoint.objects.select_related("product").filter(id=endpoint_id).first()
    if endpoint is None or endpoint.enabled:
        return
    mail_admins(
        f"Webhook endpoint disabled: {endpoint.url_masked}",
        f"Rowbell disabled the webhook endpoint {endpoint.id} ({endpoint.url_masked}) of {endpoint.product.name} "
        f"at {endpoint.disabled_at:%Y-%m-%d %H:%M:%S %Z}.\n\nReason: {endpoint.disabled_reason}\n\n"
        "Nothing is sent to it until it is enabled again; enabling it offers to replay what failed meanwhile.",
        fail_silently=False)


def replayable_deliveries(*, endpoint: WebhookEndpoint, since=None, until=None):
    """The endpoint's deliveries that did not get through: failed, or skipped because it was disabled;
    with `since`/`until`, those that ended in that time range."""
    qs = Delivery.objects.filter(endpoint=endpoint).filter(
        Q(status=DeliveryStatus.FAILED) | Q(status=DeliveryStatus.SKIPPED, last_error=ENDPOINT_DISABLED))
    if since is not None:
        qs = qs.filter(completed_at__gte=since)
    if until is not None:
        qs = qs.filter(completed_at__lt=until)
    return qs


def webhook_endpoint_enable(*, endpoint: WebhookEndpoint, actor: str, replay: bool = False) -> tuple:
    """Send to an endpoint again, reinstalling its row-event trigger first when it has one. Returns the
    endpoint and what failed while it was failing or disabled: replayed at once with `replay`, otherwise
    counted, so that the caller can offer it."""
    from apps.connections.capture import Capture
    from apps.connections.services import connection_captures_install

    with transaction.atomic():
        locked = WebhookEndpoint.objects.select_for_update().get(id=endpoint.id)
        since = locked.failing_since or locked.disabled_at
        changed = WebhookEndpoint.objects.filter(id=endpoint.id, enabled=False).update(
            enabled=True, disabled_at=None, disabled_reason="", failing_since=None)
        if changed:
            audit_record(action="webhook.enabled", target_type="webhook", target_id=endpoint.id,
                         product_id=endpoint.product_id, actor=actor)
            if endpoint.capture_spec:
                from apps.connections.models import Connection

                Connection.objects.select_for_update().filter(id=endpoint.connection_id).first()
                connection_captures_install(connection=endpoint.connection,
                                            captures=[Capture.from_spec(endpoint.capture_spec)], actor=actor)
        pending = replayable_deliveries(endpoint=locked, since=since) if changed and since else Delivery.objects.none()
        if replay:
            # At most MAX_REPLAY at once; the rest stay offered (POST .../replay with the same `since`).
            replayed = len(_replay(list(pending.select_for_update().order_by("id")[:MAX_REPLAY]), actor=actor))
            # The replayed ones are queued now, no longer pending: what is left is the rest.
            waiting = pending.count() if replayed == MAX_REPLAY else 0
        else:
            replayed, waiting = 0, pending.count()
    endpoint.refresh_from_db()
    return endpoint, {"since": since, "replayed": replayed, "replayable": waiting}


MAX_REPLAY = 10_000


def _replay(deliveries: list[Delivery], *, actor: str) -> list[str]:
    """Queue finished deliveries again, as they were rendered and with their original message id (the
    `webhook-id` receivers deduplicate on); each gets a fresh set of attempts. Call inside a transaction
    holding their rows."""
    now = timezone.now()
    Delivery.objects.filter(id__in=[d.id for d in deliveries]).update(
        status=DeliveryStatus.QUEUED, next_attempt_at=now, enqueued_at=now, completed_at=None, lease_until=None,
        last_error="", max_attempts=F("attempt_count") + settings.ROWBELL_DELIVERY_MAX_ATTEMPTS, updated_at=now)
    status_events_record([(d.id, DeliveryStatus.QUEUED, {"replay_of": d.status, "by": actor}) for d in deliveries],
                         at=now, source="operator")
    audit_record_many([AuditEntry(action="delivery.replayed", target_type="delivery", target_id=d.message_id,
                                  product_id=d.product_id, organization_id=d.organization_id, actor=actor,
                                  data={"previous_status": d.status, "attempts_so_far": d.attempt_count})
                       for d in deliveries])
    deliveries_enqueue_by_priority((d.id, d.priority) for d in deliveries)
    return [d.message_id for d in deliveries]


def deliveries_replay(*, product_id, actor: str, message_ids: list[str] | None = None,
                      endpoint: WebhookEndpoint | None = None, since=None, until=None) -> dict:
    """Send webhook deliveries again with their original `webhook-id`: the listed ones (whatever their
    final status, e.g. to re-send one that was delivered), or every delivery of `endpoint` that did not
    get through in [since, until). Deliveries still in progress, discarded ones (in review, or with their
    run) and those of disabled endpoints are left alone and reported; an endpoint's replay while it is
    disabled is refused (enabling it offers the same replay)."""
    from apps.core.exceptions import Conflict

    from .models import FINAL_STATUSES

    if endpoint is not None and not endpoint.enabled:
        raise Conflict("The webhook endpoint is disabled; enable it first (it offers the same replay).")
    with transaction.atomic():
        if message_ids is not None:
            _at_most_a_batch(message_ids)
            found = list(Delivery.objects.select_for_update(of=("self",)).select_related("endpoint").filter(
                product_id=product_id, message_id__in=message_ids, channel="webhook").order_by("id"))
        else:
            if since is not None and until is not None and since >= until:
                raise InvalidInput("Must be after `since`.", field="until")
            found = list(replayable_deliveries(endpoint=endpoint, since=since, until=until)
                         .select_for_update(of=("self",)).select_related("endpoint").order_by("id")[:MAX_REPLAY + 1])
            if len(found) > MAX_REPLAY:
                raise InvalidInput(f"More than {MAX_REPLAY} deliveries in this range; replay a shorter one.",
                                   field="since")
        ready = [d for d in found if d.status in FINAL_STATUSES and d.status != DeliveryStatus.DISCARDED
                 and d.endpoint_id and d.endpoint.enabled]
        replayed = _replay(ready, actor=actor)
    not_replayed = {d.message_id: ("The webhook endpoint no longer exists." if not d.endpoint_id else
                                   "The webhook endpoint is disabled; enable it first." if not d.endpoint.enabled
                                   else "It was discarded (in review, or with its run); it is not sent."
                                   if d.status == DeliveryStatus.DISCARDED else f"The delivery is still {d.status}.")
                    for d in found if d not in ready}
    if message_ids is not None:
        known = {d.message_id for d in found}
        not_replayed.update({m: "No webhook delivery with this id." for m in message_ids if m not in known})
    return {"replayed": replayed, "not_replayed": not_replayed}


def _row_event_payload(endpoint, event, ids, index: int, count: int) -> dict:
    """The thin row-event message: who, what, which table, which rows. Receivers fetch the data."""
    from apps.connections.sources import EVENT_OF_OPERATION

    payload = {"webhook_id": str(endpoint.id), "type": EVENT_OF_OPERATION[event.op], "table": event.table_name,
               "ids": ids, "event_id": f"evt_{event.id}", "occurred_at": event.captured_at.isoformat(),
               "chunk": {"index": index, "count": count}}
    if endpoint.source and "classification" in endpoint.source:
        payload["classification"] = endpoint.source["classification"]["name"]
    if event.detail and event.detail.get("partition"):  # a TRUNCATE of one partition
        payload["partition"] = event.detail["partition"]
    return payload


def deliveries_for_events(*, events) -> int:
    """Create the row-event webhook deliveries of newly recorded events; return how many.

    Call inside the transaction that records the events. One message per endpoint, event and chunk of
    ROWBELL_WEBHOOK_IDS_PER_MESSAGE ids; the unique (endpoint, event, chunk) makes a repeat do nothing.
    """
    from apps.connections.sources import NOT_DELIVERED

    events = [e for e in events if e.op not in NOT_DELIVERED]
    if not events:
        return 0
    endpoints = list(WebhookEndpoint.objects.filter(
        connection_id__in={e.connection_id for e in events}, capture__in={e.capture for e in events},
        enabled=True))
    if not endpoints:
        return 0
    now = timezone.now()
    size = settings.ROWBELL_WEBHOOK_IDS_PER_MESSAGE
    rows = []
    for event in events:
        for endpoint in endpoints:
            if endpoint.capture != event.capture or endpoint.connection_id != event.connection_id:
                continue
            chunks = [event.ids[i:i + size] for i in range(0, len(event.ids), size)] or [[]]
            for index, ids in enumerate(chunks):
                rows.append(Delivery(
                    product_id=endpoint.product_id, endpoint=endpoint, channel="webhook",
                    target=endpoint.url_masked, event=event, chunk=index, priority="normal", status=DeliveryStatus.QUEUED,
                    max_attempts=settings.ROWBELL_DELIVERY_MAX_ATTEMPTS, next_attempt_at=now,
                    payload=_row_event_payload(endpoint, event, ids, index, len(chunks))))
    Delivery.objects.bulk_create(rows, ignore_conflicts=True)
    fresh = list(Delivery.objects.filter(event__in=events, enqueued_at__isnull=True,
                                         status=DeliveryStatus.QUEUED).values_list("id", flat=True))
    Delivery.objects.filter(id__in=fresh).update(enqueued_at=now)
    status_events_record([(i, DeliveryStatus.QUEUED) for i in fresh], at=now)
    deliveries_enqueue_on_commit(fresh, "normal")
    return len(fresh)


# --- Creating deliveries ------------------------------------------------------------------------


def deliveries_enqueue_on_commit(ids: list[int], priority: str) -> None:
    batch = settings.ROWBELL_DELIVERY_BATCH
    for start in range(0, len(ids), batch):
        hint_on_commit("apps.deliveries.tasks.deliveries_send", [ids[start:start + batch]], queue=priority)


def deliveries_enqueue_by_priority(pairs) -> None:
    """deliveries_enqueue_on_commit for (delivery id, priority) pairs: each priority's ids on its queue."""
    by_priority: dict[str, list[int]] = defaultdict(list)
    for delivery_id, priority in pairs:
        by_priority[priority].append(delivery_id)
    for priority, ids in by_priority.items():
        deliveries_enqueue_on_commit(ids, priority)


def delivery_build(*, run, step_id: str, channel: str, rendered: Rendered, held: bool = False,
                   max_attempts: int | None = None, backoff: tuple = (None, None)) -> tuple[Delivery, AuditEntry | None]:
    """The delivery a run's notify step makes, unsaved: queued, held for review (sandbox) or skipped with
    the reason; and the audit row a held or skipped one needs."""
    now = timezone.now()
    skipped = bool(rendered.skip_reason)
    status = DeliveryStatus.SKIPPED if skipped else DeliveryStatus.HELD if held else DeliveryStatus.QUEUED
    queued = status == DeliveryStatus.QUEUED
    delivery = Delivery(
        product_id=run.product_id, organization_id=run.organization_id, request_id=run.request_id, run=run,
        step_id=step_id, channel=channel, endpoint=rendered.endpoint, endpoint_id=rendered.endpoint_id,
        recipient_id=str(run.recipient.get("id", ""))[:200], target=rendered.target, payload=rendered.payload,
        priority=run.priority, max_attempts=max_attempts or settings.ROWBELL_DELIVERY_MAX_ATTEMPTS,
        backoff_seconds=backoff[0], max_backoff_seconds=backoff[1], status=status,
        last_error=rendered.skip_reason, next_attempt_at=now if queued else None,
        enqueued_at=now if queued else None, completed_at=now if skipped else None,
    )
    tracking = run.workflow_version.definition.get("tracking") or {}
    if channel == "email" and not skipped and (tracking.get("opens") or tracking.get("clicks")):
        from .tracking import tracking_apply

        delivery.payload = tracking_apply(delivery.payload, delivery.message_id, opens=tracking.get("opens", False),
                                          clicks=tracking.get("clicks", False))
    audit = None
    if not queued:
        audit = AuditEntry(action="delivery.skipped" if skipped else "delivery.held", target_type="delivery",
                           target_id=delivery.message_id, product_id=run.product_id,
                           organization_id=run.organization_id,
                           data={"reason": rendered.skip_reason, "channel": channel} if skipped
                           else {"channel": channel, "reason": "sandbox"})
    return delivery, audit


def delivery_create(*, run, step_id: str, channel: str, rendered: Rendered, held: bool = False,
                    max_attempts: int | None = None, backoff: tuple = (None, None)) -> Delivery:
    """Record a run's delivery (see delivery_build); send it after commit unless it is held or skipped.

    Call inside the step's transaction: the delivery exists if and only if the step completed.
    """
    delivery, audit = delivery_build(run=run, step_id=step_id, channel=channel, rendered=rendered, held=held,
                                     max_attempts=max_attempts, backoff=backoff)
    delivery.save()
    status_events_record([(delivery.id, delivery.status)], at=delivery.created_at)
    if audit is not None:
        audit_record_many([audit])
    else:
        deliveries_enqueue_on_commit([delivery.id], run.priority)
    return delivery


# --- Sandbox review -----------------------------------------------------------------------------

MAX_REVIEW_BATCH = 1000


def _at_most_a_batch(message_ids: list[str]) -> None:
    if len(message_ids) > MAX_REVIEW_BATCH:
        raise InvalidInput(f"At most {MAX_REVIEW_BATCH} deliveries at a time.", field="ids")


def _held(product_id, message_ids: list[str]) -> list[Delivery]:
    """The held deliveries among `message_ids`, locked: the product's, or any product's for operators
    (`product_id` None)."""
    _at_most_a_batch(message_ids)
    held = Delivery.objects.select_for_update(of=("self",)).filter(message_id__in=message_ids,
                                                                    status=DeliveryStatus.HELD)
    if product_id is not None:
        held = held.filter(product_id=product_id)
    return list(held.order_by("id"))


def deliveries_release(*, product_id, message_ids: list[str], actor: str) -> list[str]:
    """Send held deliveries as they were rendered, through the normal path (signing, retries); return the
    ids released. Ids that are not held (already reviewed, or not this product's) are left alone. Operators
    pass `product_id=None`: held deliveries of any product."""
    now = timezone.now()
    with transaction.atomic():
        held = _held(product_id, message_ids)
        Delivery.objects.filter(id__in=[d.id for d in held]).update(
            status=DeliveryStatus.QUEUED, next_attempt_at=now, enqueued_at=now, updated_at=now)
        status_events_record([(d.id, DeliveryStatus.QUEUED, {"released_by": actor}) for d in held], at=now,
                             source="operator")
        audit_record_many([AuditEntry(action="delivery.released", target_type="delivery", target_id=d.message_id,
                                      product_id=d.product_id, organization_id=d.organization_id, actor=actor,
                                      data={"channel": d.channel}) for d in held])
        deliveries_enqueue_by_priority((d.id, d.priority) for d in held)
    return [d.message_id for d in held]


def deliveries_discard(*, product_id, message_ids: list[str], actor: str) -> list[str]:
    """Drop held deliveries without sending them; their runs go on with the next step. Return the ids
    discarded."""
    now = timezone.now()
    with transaction.atomic():
        held = _held(product_id, message_ids)
        Delivery.objects.filter(id__in=[d.id for d in held]).update(
            status=DeliveryStatus.DISCARDED, completed_at=now, updated_at=now,
            last_error=f"Discarded in review by {actor}.")
        status_events_record([(d.id, DeliveryStatus.DISCARDED, {"discarded_by": actor}) for d in held], at=now,
                             source="operator")
        audit_record_many([AuditEntry(action="delivery.discarded", target_type="delivery", target_id=d.message_id,
                                      product_id=d.product_id, organization_id=d.organization_id, actor=actor,
                                      data={"channel": d.channel}) for d in held])
        _settle([(d.run_id, d.step_id, True, "") for d in held if d.run_id])
    return [d.message_id for d in held]


# --- Sending ------------------------------------------------------------------------------------

def _claim(delivery_ids: list[int]) -> list[Delivery]:
    """Take the due, queued deliveries among `delivery_ids`; rows locked by another worker are skipped."""
    now = timezone.now()
    with transaction.atomic():
        rows = list(
            Delivery.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("endpoint")
            .filter(id__in=delivery_ids, status=DeliveryStatus.QUEUED, next_attempt_at__lte=now)
        )
        # Deliveries queued before their endpoint was disabled are not sent: skipped, with the reason.
        disabled = [d for d in rows if d.endpoint_id and not d.endpoint.enabled]
        if disabled:
            Delivery.objects.filter(id__in=[d.id for d in disabled]).update(
                status=DeliveryStatus.SKIPPED, last_error=ENDPOINT_DISABLED, completed_at=now,
                updated_at=now)
            status_events_record([(d.id, DeliveryStatus.SKIPPED, {"reason": ENDPOINT_DISABLED}) for d in disabled],
                                 at=now)
            audit_record_many([AuditEntry(action="delivery.skipped", target_type="delivery", target_id=d.message_id,
                                          product_id=d.product_id, organization_id=d.organization_id,
                                          data={"reason": "endpoint disabled"}) for d in disabled])
            _settle([(d.run_id, d.step_id, True, "") for d in disabled if d.run_id])
            rows = [d for d in rows if d not in disabled]
        if rows:
            Delivery.objects.filter(id__in=[d.id for d in rows]).update(
                status=DeliveryStatus.SENDING, attempt_count=F("attempt_count") + 1,
                lease_until=now + timedelta(seconds=settings.ROWBELL_LEASE_SECONDS), updated_at=now,
            )
            status_events_record([(d.id, DeliveryStatus.SENDING) for d in rows], at=now)
    for d in rows:
        d.attempt_count += 1
    return rows


def _send(claimed: list[Delivery]) -> list[tuple]:
    """One try for each claimed delivery, each channel's deliveries together: (delivery, started, outcome)."""
    by_channel: dict[str, list[Delivery]] = defaultdict(list)
    for delivery in claimed:
        by_channel[delivery.channel].append(delivery)
    outcomes = []
    for kind, group in by_channel.items():
        started = timezone.now()
        try:
            results = channel_get(kind).send_many(group)
        except Exception as exc:  # a bug in a channel must not lose the deliveries: record and retry them
            logger.exception("Channel %s crashed on a batch of %d", kind, len(group))
            results = [DeliveryError(f"Internal error: {exc.__class__.__name__}")] * len(group)
        outcomes.extend((d, started, r) for d, r in zip(group, results))
    return outcomes


# A result still belongs to its claim while the delivery is sending, or was put back in the queue by the
# reconciler, with the same attempt count; once another worker has claimed it again, it does not.
_OURS = (DeliveryStatus.SENDING, DeliveryStatus.QUEUED)
_ATTEMPT_UPSERT = ("ON CONFLICT (delivery_id, number) DO UPDATE SET " + ", ".join(
    f"{f} = EXCLUDED.{f}" for f in ("started_at", "duration_ms", "outcome", "status_code", "error", "response_excerpt",
                                    "permanent")))


_SUCCESSES = """
UPDATE deliveries_delivery d
SET status = v.status, completed_at = %s, last_error = '', lease_until = NULL, updated_at = %s,
    provider_message_id = COALESCE(NULLIF(v.provider_message_id, ''), d.provider_message_id)
FROM unnest(%s::bigint[], %s::int[], %s::text[], %s::text[]) AS v(id, attempt_count, status, provider_message_id)
WHERE d.id = v.id AND d.attempt_count = v.attempt_count AND d.status IN ('sending', 'queued')
RETURNING d.id
"""


def _successes_record(successes, now) -> set[int]:
    """Mark sent deliveries with their final status in one statement; return the ids that were still
    ours (same claim: same attempt count, still sending or put back in the queue)."""
    if not successes:
        return set()
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(_SUCCESSES, [now, now, [d.id for d, _, _ in successes],
                                    [d.attempt_count for d, _, _ in successes], [o.status for _, _, o in successes],
                                    [o.provider_message_id for _, _, o in successes]])
        return {row[0] for row in cursor.fetchall()}


def _record(outcomes) -> None:
    """Write every attempt and the resulting statuses in one transaction.

    Attempt rows are upserted: when a slow send comes back after the reconciler recorded its attempt as
    "unknown", the real outcome replaces it, and a delivery that did succeed is not sent again.
    """
    now = timezone.now()
    attempts, audits, settled, changes = [], [], [], []
    with transaction.atomic():
        successes = [(d, started, o) for d, started, o in outcomes if isinstance(o, SendResult)]
        recorded = _successes_record(successes, now)
        for delivery, started, outcome in successes:
            attempts.append(DeliveryAttempt(delivery=delivery, number=delivery.attempt_count, started_at=started,
                                            duration_ms=outcome.duration_ms, outcome=AttemptOutcome.SUCCESS,
                                            status_code=outcome.status_code, response_excerpt=outcome.excerpt))
            if delivery.id in recorded:
                changes.append((delivery.id, outcome.status, {"status_code": outcome.status_code}
                                if outcome.status_code is not None else {}))
                if delivery.run_id:
                    settled.append((delivery.run_id, delivery.step_id, True, ""))
                audits.append(AuditEntry(
                    action=f"delivery.{outcome.status}", product_id=delivery.product_id,
                    organization_id=delivery.organization_id, target_type="delivery", target_id=delivery.message_id,
                    data={"attempt": delivery.attempt_count, "status_code": outcome.status_code,
                          "channel": delivery.channel}))
        for delivery, started, outcome in outcomes:
            if isinstance(outcome, SendResult):
                continue
            scope = {"product_id": delivery.product_id, "organization_id": delivery.organization_id,
                     "target_type": "delivery", "target_id": delivery.message_id}
            number = delivery.attempt_count
            ours = Delivery.objects.filter(id=delivery.id, attempt_count=number, status__in=_OURS)
            exc: DeliveryError = outcome
            attempts.append(DeliveryAttempt(delivery=delivery, number=number, started_at=started,
                                            duration_ms=exc.duration_ms, outcome=AttemptOutcome.FAILURE,
                                            status_code=exc.status_code, error=exc.message[:2000],
                                            response_excerpt=exc.excerpt, permanent=exc.permanent))
            detail = {"attempt": number, "status_code": exc.status_code, "error": exc.message[:500],
                      "channel": delivery.channel}
            audits.append(AuditEntry(action="delivery.attempt_failed", data=detail, **scope))
            if exc.permanent or number >= delivery.max_attempts:
                if ours.update(status=DeliveryStatus.FAILED, completed_at=now, last_error=exc.message[:2000],
                               lease_until=None, updated_at=now):
                    reason = "permanent error" if exc.permanent else f"gave up after {number} attempts"
                    changes.append((delivery.id, DeliveryStatus.FAILED, {"reason": reason, "error": exc.message[:500]}))
                    audits.append(AuditEntry(action="delivery.failed", data={**detail, "reason": reason}, **scope))
                    if delivery.run_id:
                        settled.append((delivery.run_id, delivery.step_id, False, f"Step '{delivery.step_id}': delivery "
                                        f"{delivery.message_id} failed ({reason}): {exc.message}"))
            else:
                delay = retry_delay(number, retry_after=exc.retry_after, base=delivery.backoff_seconds,
                                    cap=delivery.max_backoff_seconds)
                next_at = now + timedelta(seconds=delay)
                if ours.update(status=DeliveryStatus.QUEUED, next_attempt_at=next_at, last_error=exc.message[:2000],
                               lease_until=None, updated_at=now):
                    changes.append((delivery.id, DeliveryStatus.QUEUED, {"retry_at": next_at.isoformat(),
                                                                         "error": exc.message[:500]}))
                    audits.append(AuditEntry(action="delivery.retry_scheduled",
                                             data={**detail, "next_attempt_at": next_at.isoformat(),
                                                   "delay_seconds": round(delay, 3)}, **scope))
        _endpoints_health(outcomes, now)
        status_events_record(changes, at=now)
        insert_rows(DeliveryAttempt, [
            {"delivery_id": a.delivery_id, "number": a.number, "started_at": a.started_at,
             "duration_ms": a.duration_ms, "outcome": a.outcome, "status_code": a.status_code, "error": a.error,
             "response_excerpt": a.response_excerpt, "permanent": a.permanent} for a in attempts],
            on_conflict=_ATTEMPT_UPSERT)
        audit_record_many(audits)
        _settle(settled)


# One statement writes only the endpoints whose failure streak starts or ends, so a batch of successes
# locks nothing, and no two batches lock endpoint rows in different orders.
_STREAKS = """
UPDATE deliveries_webhookendpoint
SET failing_since = CASE WHEN id = ANY(%(ok)s) THEN NULL ELSE %(now)s END
WHERE enabled AND ((id = ANY(%(ok)s) AND failing_since IS NOT NULL)
                   OR (id = ANY(%(failed)s) AND failing_since IS NULL))
"""


def _endpoints_health(outcomes, now) -> None:
    """Keep each webhook endpoint's failure streak: a success ends it; an endpoint whose attempts have all
    failed for longer than ROWBELL_ENDPOINT_DISABLE_AFTER_SECONDS, or that answered 410 Gone, is disabled
    and operators are told."""
    from django.db import connection

    ok, failed, gone = set(), set(), set()
    for delivery, _, outcome in outcomes:
        if not delivery.endpoint_id:
            continue
        if isinstance(outcome, SendResult):
            ok.add(delivery.endpoint_id)
        elif outcome.status_code == 410:
            gone.add(delivery.endpoint_id)
        else:
            failed.add(delivery.endpoint_id)
    failed -= ok | gone
    if ok or failed:
        with connection.cursor() as cursor:
            cursor.execute(_STREAKS, {"ok": sorted(ok), "failed": sorted(failed), "now": now})
    if failed:
        span = settings.ROWBELL_ENDPOINT_DISABLE_AFTER_SECONDS
        for endpoint_id, since in WebhookEndpoint.objects.filter(
                id__in=failed, enabled=True, failing_since__isnull=False).values_list("id", "failing_since"):
            if (now - since).total_seconds() >= span:
                _endpoints_disable([endpoint_id], actor="rowbell", notify=True, now=now,
                                   reason=f"Every attempt failed since {since:%Y-%m-%d %H:%M:%S %Z} "
                                          f"(longer than {_span_text(span)}).")
    if gone:
        _endpoints_disable(list(gone), actor="rowbell", notify=True, now=now,
                           reason="The endpoint answered 410 Gone.")


def _span_text(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} seconds"


def _settle(settled: list[tuple]) -> None:
    """Move on the runs waiting for these deliveries: (run id, step id, sent or not, why not). Call inside
    the transaction that finalized the deliveries."""
    if settled:
        from apps.runs.engine import runs_deliveries_settled  # runs build on deliveries, not the reverse

        runs_deliveries_settled(settled)


def deliveries_send(*, delivery_ids: list[int]) -> int:
    """Send a batch of deliveries; return how many were attempted.

    1. Claim: queued and due rows move to `sending` (a conditional update under SKIP LOCKED, so two
       workers never send the same delivery at once).
    2. Send concurrently over pooled keep-alive connections.
    3. Record every attempt and outcome in one transaction: delivered/sent, retry later, or failed.
    A worker that dies between 1 and 3 leaves `sending` rows whose lease expires; the reconciler puts
    them back in the queue (at-least-once).
    """
    claimed = _claim(delivery_ids)
    if not claimed:
        return 0
    deliveries_send_claimed(claimed)
    return len(claimed)


def deliveries_send_claimed(claimed: list[Delivery]) -> None:
    """Send deliveries already claimed (status `sending`, attempt counted, lease set) and record the
    outcomes: steps 2 and 3 of deliveries_send, for callers that created them claimed."""
    _record(_send(claimed))


# --- Housekeeping -------------------------------------------------------------------------------


def deliveries_dispatch_due(*, limit: int = 10_000) -> int:
    """Send hints for queued deliveries that are due and have no live hint: retries whose back-off
    has passed, and deliveries whose hint was lost (e.g. Redis restarted)."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.ROWBELL_REQUEUE_AFTER_SECONDS)
    with transaction.atomic():
        due = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(status=DeliveryStatus.QUEUED, next_attempt_at__lte=now)
            .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=F("next_attempt_at")) | Q(enqueued_at__lt=stale))
            .order_by("next_attempt_at")
            .values_list("id", "priority")[:limit]
        )
        if not due:
            return 0
        Delivery.objects.filter(id__in=[i for i, _ in due]).update(enqueued_at=now)
        deliveries_enqueue_by_priority(due)
    return len(due)


def deliveries_reconcile() -> int:
    """Return deliveries stuck in `sending` past their lease (their worker died) to the queue."""
    now = timezone.now()
    with transaction.atomic():
        stuck = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(status=DeliveryStatus.SENDING, lease_until__lt=now)
            .values_list("id", "attempt_count", "product_id", "organization_id", "message_id")[:10_000]
        )
        if not stuck:
            return 0
        Delivery.objects.filter(id__in=[s[0] for s in stuck]).update(
            status=DeliveryStatus.QUEUED, next_attempt_at=now, enqueued_at=None, lease_until=None, updated_at=now,
            last_error="The worker stopped before the outcome was recorded.")
        status_events_record([(s[0], DeliveryStatus.QUEUED, {"reason": "lease expired"}) for s in stuck], at=now)
        DeliveryAttempt.objects.bulk_create(
            [DeliveryAttempt(delivery_id=i, number=n, started_at=now, outcome=AttemptOutcome.UNKNOWN,
                             error="The worker stopped before the outcome was recorded.")
             for i, n, *_ in stuck],
            ignore_conflicts=True,
        )
        audit_record_many([AuditEntry(action="delivery.requeued", target_type="delivery", target_id=m,
                                      product_id=p, organization_id=o, data={"reason": "lease expired"})
                           for _, _, p, o, m in stuck])
    return len(stuck)


# --- Providers ----------------------------------------------------------------------------------


def provider_config_check(*, channel: str, provider: str, credentials, options) -> dict:
    """Credentials and options checked against the provider's own fields: {"credentials", "options"},
    normalized. Raises InvalidInput naming each field at fault (`credentials.auth_token`...)."""
    from .providers import PROVIDERS, providers_of

    if not providers_of(channel):
        channels = sorted({c for c, _ in PROVIDERS})
        raise InvalidInput(f"Channels with providers: {', '.join(channels)}.", field="channel")
    if provider not in providers_of(channel):
        raise InvalidInput(f"Must be one of: {', '.join(providers_of(channel))}.", field="provider")
    impl = PROVIDERS[(channel, provider)]
    errors = {}
    checked = {}
    for name, serializer_class, value in (("credentials", impl.Credentials, credentials),
                                          ("options", impl.Options, options)):
        if not isinstance(value, dict):
            errors[name] = "Must be an object."
            continue
        serializer = serializer_class(data=value)
        if serializer.is_valid():
            checked[name] = dict(serializer.validated_data)
        else:
            for error in flatten_errors(serializer.errors, name):
                errors.setdefault(error["field"], error["reason"])
        unknown = sorted(set(value) - set(serializer_class().fields))
        if unknown:
            errors[f"{name}.{unknown[0]}"] = f"Unknown field for {provider}."
    if errors:
        raise InvalidInput("The provider configuration is not valid.", fields=errors)
    return checked


def provider_config_put(*, product, channel: str, provider: str, credentials, options, actor: str,
                        organization=None):
    """Set the provider of a channel for a product (or one of its organizations), replacing any before.
    Credentials and options are checked against the provider's own fields; the credentials are stored
    encrypted and never returned. A provider that reports events (apps.deliveries.provider_events) gets
    its own event webhook the first time: its basic-auth secret is on the returned object as
    `events_secret_new`, once; a later change keeps the URL and the secret."""
    from .models import ProviderConfig
    from .provider_events import EVENT_PROVIDERS, events_credentials_new

    checked = provider_config_check(channel=channel, provider=provider, credentials=credentials, options=options)
    with transaction.atomic():
        config, created = ProviderConfig.objects.select_for_update().get_or_create(
            product=product, organization=organization, channel=channel,
            defaults={"provider": provider, "credentials": json.dumps(checked["credentials"]),
                      "options": checked["options"]})
        if not created:
            config.provider, config.options = provider, checked["options"]
            config.credentials = json.dumps(checked["credentials"])
            config.save()
        config.events_secret_new = ""
        if provider in EVENT_PROVIDERS and channel == "email" and not config.events_token:
            config.events_token, config.events_secret = events_credentials_new()
            config.save(update_fields=["events_token", "events_secret"])
            config.events_secret_new = config.events_secret
        audit_record(action="provider.configured", target_type="provider", target_id=config.id,
                     product_id=product.id, organization_id=organization.id if organization else None, actor=actor,
                     data={"channel": channel, "provider": provider, "options": checked["options"],
                           "credentials_set": sorted(checked["credentials"])})
    return config


def provider_config_rotate_events_secret(*, config, actor: str):
    """Give a provider configuration's event webhook a new basic-auth secret (and its URL token, if it
    had none yet), returned on the object as `events_secret_new`, once. The previous secret stops working
    at once: the provider's webhook URL must be updated. Raises InvalidInput for a provider without
    event webhooks."""
    from .models import ProviderConfig
    from .provider_events import EVENT_PROVIDERS, events_credentials_new

    if config.channel != "email" or config.provider not in EVENT_PROVIDERS:
        raise InvalidInput(f"Event webhooks exist for the email providers {', '.join(EVENT_PROVIDERS)}.",
                           field="channel")
    with transaction.atomic():
        locked = ProviderConfig.objects.select_for_update().get(id=config.id)
        token, secret = events_credentials_new()
        locked.events_token = locked.events_token or token
        locked.events_secret = secret
        locked.save(update_fields=["events_token", "events_secret", "updated_at"])
        audit_record(action="provider.events_secret_rotated", target_type="provider", target_id=locked.id,
                     product_id=locked.product_id, organization_id=locked.organization_id, actor=actor,
                     data={"channel": locked.channel, "provider": locked.provider})
    locked.events_secret_new = secret
    return locked


def provider_config_delete(*, product, channel: str, actor: str, organization=None) -> bool:
    from .models import ProviderConfig

    with transaction.atomic():
        config = ProviderConfig.objects.filter(product=product, organization=organization, channel=channel).first()
        if config is None:
            return False
        config.delete()
        audit_record(action="provider.removed", target_type="provider", target_id=config.id, product_id=product.id,
                     organization_id=organization.id if organization else None, actor=actor,
                     data={"channel": channel, "provider": config.provider})
    return True
