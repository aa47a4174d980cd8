"""Webhook endpoints: create, rotate secrets, disable and enable, replay what failed."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.db.models import F, Func, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from apps.audit.services import AuditEntry, audit_record, audit_record_many
from apps.core.actions import ActionSuperseded, action_queue, action_request
from apps.core.exceptions import ApplicationError, Conflict, InvalidInput
from apps.core.masking import url_mask

from .. import outbound
from ..hooks import endpoint_enabled, endpoints_disabled
from ..models import ENDPOINT_DISABLED, Delivery, DeliveryStatus, WebhookEndpoint
from ..signing import secret_generate
from .creating import deliveries_enqueue_by_priority
from .history import status_events_record
from .review import at_most_a_batch

logger = logging.getLogger(__name__)


# --- Endpoints ----------------------------------------------------------------------------------


def webhook_endpoint_url_check(url: str) -> None:
    """Refuse a URL Rowbell must not send to (apps/core/destinations.py); raises InvalidInput on `url`."""
    try:
        outbound.url_check(url)
    except outbound.DestinationRefused as exc:
        raise InvalidInput(exc.message, field="url") from exc


def webhook_endpoint_create(
    *,
    product,
    url: str,
    description: str = "",
    accept_any_2xx: bool = False,
    retry_schedule: list | None = None,
    actor: str,
    connection=None,
    source: dict | None = None,
    capture_name: str = "",
    capture_spec: dict | None = None,
) -> WebhookEndpoint:
    """Register a webhook endpoint; its `whsec_` secret is returned on the object once (then only encrypted).

    `connection`, `source` (normalized), `capture_name` and `capture_spec` make it a row-event subscription:
    apps.subscriptions validates the source and installs its capture in the same transaction (call
    `subscription_create` for that). `retry_schedule`: seconds before each retry of its webhooks (None: the
    service's webhook schedule; apps.deliveries.backoff). Raises InvalidInput for a URL Rowbell must not send to.
    """
    webhook_endpoint_url_check(url)
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.create(
            product=product,
            url=url,
            host=(urlsplit(url).hostname or "")[:255],
            description=description,
            accept_any_2xx=accept_any_2xx,
            retry_schedule=retry_schedule,
            secret=secret_generate(),
            connection=connection,
            source=source,
            capture=capture_name,
            capture_spec=capture_spec,
        )
        audit_record(
            action="webhook.created",
            target_type="webhook",
            target_id=endpoint.id,
            product_id=product.id,
            actor=actor,
            data={
                "url": url_mask(url),
                "accept_any_2xx": accept_any_2xx,
                "retry_schedule": retry_schedule,
                "source": source,
            },
        )
    return endpoint


_UPDATABLE = ("description", "accept_any_2xx", "retry_schedule")


def webhook_endpoint_update(*, endpoint: WebhookEndpoint, changes: dict, actor: str) -> WebhookEndpoint:
    """Change an endpoint's `description`, `accept_any_2xx` or `retry_schedule` (seconds before each retry;
    None: the service's webhook schedule), as given in `changes`; audited (`webhook.updated`) with what changed.
    Deliveries already made keep the schedule they were made with. Raises InvalidInput for another field."""
    unknown = set(changes) - set(_UPDATABLE)
    if unknown:
        field = sorted(unknown)[0]
        raise InvalidInput(f"Not a field that can change: {', '.join(_UPDATABLE)} can.", field=field)
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().get(id=endpoint.id)
        changed = {k: v for k, v in changes.items() if getattr(endpoint, k) != v}
        for key, value in changed.items():
            setattr(endpoint, key, value)
        if changed:
            endpoint.save(update_fields=list(changed))
            audit_record(
                action="webhook.updated",
                target_type="webhook",
                target_id=endpoint.id,
                product_id=endpoint.product_id,
                actor=actor,
                data=changed,
            )
    return endpoint


def webhook_endpoint_rotate_secret(*, endpoint: WebhookEndpoint, overlap_seconds: float, actor: str) -> WebhookEndpoint:
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
        audit_record(
            action="webhook.secret_rotated",
            target_type="webhook",
            target_id=endpoint.id,
            product_id=endpoint.product_id,
            actor=actor,
            data={"previous_secret_signs_until": until.isoformat()},
        )
    return locked


MAX_SECRET_OVERLAP_SECONDS = 7 * 24 * 3600
DEFAULT_SECRET_OVERLAP_SECONDS = 24 * 3600


def webhook_endpoint_disable(*, endpoint: WebhookEndpoint, actor: str, reason: str = "") -> WebhookEndpoint:
    """Stop sending to an endpoint. Its row-event trigger is retired in the customer database once no
    enabled endpoint uses it, by a task queued on commit: no customer database is reached in the request."""
    with transaction.atomic():
        endpoints_disable([endpoint.id], reason=reason or f"Disabled by {actor}.", actor=actor)
    endpoint.refresh_from_db()
    return endpoint


def webhook_endpoint_enable_request(*, endpoint: WebhookEndpoint, actor: str, replay: bool) -> None:
    """Queue enabling an endpoint (which reinstalls its row-event trigger in the customer database), with
    or without replaying what failed meanwhile; see webhook_endpoint_enable."""
    action_request(
        name="webhook.enable",
        target_type="webhook",
        target_id=endpoint.id,
        actor=actor,
        product_id=endpoint.product_id,
        audit_data={"replay": replay},
        args={"endpoint_id": str(endpoint.id), "replay": replay, "requested_at": timezone.now().isoformat()},
    )


def webhook_endpoint_enable_queued(
    *, endpoint_id, actor: str, replay: bool, requested_at: str | None = None
) -> dict | None:
    """Enable as queued by an operator. Superseded when the endpoint was disabled again after enabling was
    asked for; a refusal (the customer database unreachable) is audited and raised."""

    endpoint = WebhookEndpoint.objects.select_related("connection").filter(id=endpoint_id).first()
    if endpoint is None:
        return None
    if requested_at and endpoint.disabled_at and endpoint.disabled_at > datetime.fromisoformat(requested_at):
        raise ActionSuperseded("The endpoint was disabled again after enabling it was asked for.")
    try:
        result = webhook_endpoint_enable(endpoint=endpoint, actor=actor, replay=replay)[1]
    except ApplicationError as exc:
        audit_record(
            action="webhook.enable_failed",
            target_type="webhook",
            target_id=endpoint.id,
            product_id=endpoint.product_id,
            actor=actor,
            data={"error": exc.message},
        )
        raise
    return {**result, "since": result["since"].isoformat() if result["since"] else None}


def endpoints_disable(endpoint_ids, *, reason: str, actor: str, notify: bool = False, now=None) -> list:
    """Disable the enabled endpoints among `endpoint_ids` with the reason; audit each. With `notify`
    (Rowbell disabled them, not a person), operators are emailed. Both, and retiring a row-event endpoint's
    trigger in the customer database, are queued actions, written in the caller's transaction: done by a
    worker, re-sent if their hint is lost. Call inside a transaction; returns the ids disabled."""
    now = now or timezone.now()
    disabled = list(
        WebhookEndpoint.objects.filter(id__in=endpoint_ids, enabled=True).values_list(
            "id", "product_id", "url", "connection_id"
        )
    )
    if not disabled:
        return []
    WebhookEndpoint.objects.filter(id__in=[d[0] for d in disabled]).update(
        enabled=False, disabled_at=now, disabled_reason=reason[:500]
    )
    audit_record_many(
        [
            AuditEntry(
                action="webhook.disabled",
                target_type="webhook",
                target_id=endpoint_id,
                product_id=product_id,
                actor=actor,
                data={"reason": reason[:500], "url": url_mask(url)},
            )
            for endpoint_id, product_id, url, _ in disabled
        ]
    )
    endpoints_disabled.call_each(endpoints=[(d[0], d[3]) for d in disabled], actor=actor)
    for endpoint_id, _, _, _ in disabled:
        if notify:
            action_queue(
                name="webhook.disabled_notify",
                target_type="webhook",
                target_id=endpoint_id,
                args={"endpoint_id": str(endpoint_id)},
                actor=actor,
            )
    return [d[0] for d in disabled]


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
        fail_silently=False,
    )


def replayable_deliveries(*, endpoint: WebhookEndpoint, since=None, until=None):
    """The endpoint's deliveries that did not get through: failed, or skipped because it was disabled;
    with `since`/`until`, those that ended in that time range."""
    qs = Delivery.objects.filter(endpoint=endpoint).filter(
        Q(status=DeliveryStatus.FAILED) | Q(status=DeliveryStatus.SKIPPED, last_error=ENDPOINT_DISABLED)
    )
    if since is not None:
        qs = qs.filter(completed_at__gte=since)
    if until is not None:
        qs = qs.filter(completed_at__lt=until)
    return qs


def webhook_endpoint_enable(*, endpoint: WebhookEndpoint, actor: str, replay: bool = False) -> tuple:
    """Send to an endpoint again, reinstalling its row-event trigger first when it has one. Returns the
    endpoint and what failed while it was failing or disabled: replayed at once with `replay`, otherwise
    counted, so that the caller can offer it."""
    with transaction.atomic():
        locked = WebhookEndpoint.objects.select_for_update().get(id=endpoint.id)
        since = locked.failing_since or locked.disabled_at
        changed = WebhookEndpoint.objects.filter(id=endpoint.id, enabled=False).update(
            enabled=True, disabled_at=None, disabled_reason="", failing_since=None, failed_attempts=0
        )
        if changed:
            audit_record(
                action="webhook.enabled",
                target_type="webhook",
                target_id=endpoint.id,
                product_id=endpoint.product_id,
                actor=actor,
            )
            endpoint_enabled.call_each(endpoint=locked, actor=actor)
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
        status=DeliveryStatus.QUEUED,
        next_attempt_at=now,
        enqueued_at=now,
        completed_at=None,
        lease_until=None,
        last_error="",
        # A fresh set of attempts: its schedule's (which starts again), else the exponential policy's count.
        max_attempts=F("attempt_count")
        + Coalesce(
            Func(F("retry_schedule"), function="jsonb_array_length") + 1, settings.ROWBELL_DELIVERY_MAX_ATTEMPTS
        ),
        updated_at=now,
    )
    status_events_record(
        [(d.id, DeliveryStatus.QUEUED, {"replay_of": d.status, "by": actor}) for d in deliveries],
        at=now,
        source="operator",
    )
    audit_record_many(
        [
            AuditEntry(
                action="delivery.replayed",
                target_type="delivery",
                target_id=d.message_id,
                product_id=d.product_id,
                organization_id=d.organization_id,
                actor=actor,
                data={"previous_status": d.status, "attempts_so_far": d.attempt_count},
            )
            for d in deliveries
        ]
    )
    deliveries_enqueue_by_priority((d.id, d.priority) for d in deliveries)
    return [d.message_id for d in deliveries]


def deliveries_replay(
    *,
    product_id,
    actor: str,
    message_ids: list[str] | None = None,
    endpoint: WebhookEndpoint | None = None,
    since=None,
    until=None,
) -> dict:
    """Send webhook deliveries again with their original `webhook-id`: the listed ones (whatever their
    final status, e.g. to re-send one that was delivered), or every delivery of `endpoint` that did not
    get through in [since, until). Deliveries still in progress, discarded ones (in review, or with their
    run) and those of disabled endpoints are left alone and reported; an endpoint's replay while it is
    disabled is refused (enabling it offers the same replay). Raises InvalidInput without message ids or an
    endpoint (every product's endpoint-less deliveries are never a replay target), Conflict for a disabled
    endpoint."""
    from ..models import FINAL_STATUSES

    if message_ids is None and endpoint is None:
        raise InvalidInput("Name the deliveries to replay (their ids), or replay an endpoint's failures.", field="ids")
    if endpoint is not None and not endpoint.enabled:
        raise Conflict("The webhook endpoint is disabled; enable it first (it offers the same replay).")
    with transaction.atomic():
        if message_ids is not None:
            at_most_a_batch(message_ids)
            found = list(
                Delivery.objects.select_for_update(of=("self",))
                .select_related("endpoint")
                .filter(product_id=product_id, message_id__in=message_ids, channel="webhook")
                .order_by("id")
            )
        else:
            assert endpoint is not None  # refused above
            if since is not None and until is not None and since >= until:
                raise InvalidInput("Must be after `since`.", field="until")
            found = list(
                replayable_deliveries(endpoint=endpoint, since=since, until=until)
                .select_for_update(of=("self",))
                .select_related("endpoint")
                .order_by("id")[: MAX_REPLAY + 1]
            )
            if len(found) > MAX_REPLAY:
                raise InvalidInput(
                    f"More than {MAX_REPLAY} deliveries in this range; replay a shorter one.", field="since"
                )
        ready = [
            d
            for d in found
            if d.status in FINAL_STATUSES
            and d.status != DeliveryStatus.DISCARDED
            and d.endpoint_id
            and d.endpoint.enabled
        ]
        replayed = _replay(ready, actor=actor)
    not_replayed = {
        d.message_id: (
            "The webhook endpoint no longer exists."
            if not d.endpoint_id
            else "The webhook endpoint is disabled; enable it first."
            if not d.endpoint.enabled
            else "It was discarded (in review, or with its run); it is not sent."
            if d.status == DeliveryStatus.DISCARDED
            else f"The delivery is still {d.status}."
        )
        for d in found
        if d not in ready
    }
    if message_ids is not None:
        known = {d.message_id for d in found}
        not_replayed.update({m: "No webhook delivery with this id." for m in message_ids if m not in known})
    return {"replayed": replayed, "not_replayed": not_replayed}
