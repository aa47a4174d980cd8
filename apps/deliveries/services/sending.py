"""Sending: claim due deliveries in batches, send them concurrently, record every attempt and outcome."""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from apps.audit.services import AuditEntry, audit_record_many
from apps.core import metrics
from apps.core.bulk import insert_rows

from ..backoff import retry_delay, scheduled_delay
from ..channels import DeliveryError, SendResult, channel_get
from ..hooks import runs_settle
from ..models import ENDPOINT_DISABLED, AttemptOutcome, Delivery, DeliveryAttempt, DeliveryStatus, WebhookEndpoint
from .creating import deliveries_enqueue_by_priority
from .endpoints import endpoints_disable
from .history import status_events_record

logger = logging.getLogger(__name__)


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
                status=DeliveryStatus.SKIPPED, last_error=ENDPOINT_DISABLED, completed_at=now, updated_at=now
            )
            status_events_record(
                [(d.id, DeliveryStatus.SKIPPED, {"reason": ENDPOINT_DISABLED}) for d in disabled], at=now
            )
            audit_record_many(
                [
                    AuditEntry(
                        action="delivery.skipped",
                        target_type="delivery",
                        target_id=d.message_id,
                        product_id=d.product_id,
                        organization_id=d.organization_id,
                        data={"reason": "endpoint disabled"},
                    )
                    for d in disabled
                ]
            )
            runs_settle([(d.run_id, d.step_id, True, "") for d in disabled if d.run_id])
            rows = [d for d in rows if d not in disabled]
        if rows:
            Delivery.objects.filter(id__in=[d.id for d in rows]).update(
                status=DeliveryStatus.SENDING,
                attempt_count=F("attempt_count") + 1,
                lease_until=now + timedelta(seconds=settings.ROWBELL_LEASE_SECONDS),
                updated_at=now,
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
    outcomes: list[tuple] = []
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
# The reason the reconciler records when a lease expired. A delivery it failed for that reason (its last attempt
# outlived its lease) still takes that attempt's success, should it come back after all (_SUCCESSES).
WORKER_STOPPED = "The worker stopped before the outcome was recorded."
_ATTEMPT_UPSERT = "ON CONFLICT (delivery_id, number) DO UPDATE SET " + ", ".join(
    f"{f} = EXCLUDED.{f}"
    for f in ("started_at", "duration_ms", "outcome", "status_code", "error", "response_excerpt", "permanent")
)


_SUCCESSES = """
UPDATE deliveries_delivery d
SET status = v.status, completed_at = %s, last_error = '', lease_until = NULL, updated_at = %s,
    provider_message_id = COALESCE(NULLIF(v.provider_message_id, ''), d.provider_message_id)
FROM unnest(%s::bigint[], %s::int[], %s::text[], %s::text[]) AS v(id, attempt_count, status, provider_message_id)
WHERE d.id = v.id AND d.attempt_count = v.attempt_count
  AND (d.status IN ('sending', 'queued')
       -- failed by the reconciler while this very attempt was still out: the late success is the truth
       OR (d.status = 'failed' AND d.last_error = %s))
RETURNING d.id
"""


def _successes_record(successes, now) -> set[int]:
    """Mark sent deliveries with their final status in one statement; return the ids that were still
    ours (same claim: same attempt count, still sending or put back in the queue)."""
    if not successes:
        return set()
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            _SUCCESSES,
            [
                now,
                now,
                [d.id for d, _, _ in successes],
                [d.attempt_count for d, _, _ in successes],
                [o.status for _, _, o in successes],
                [o.provider_message_id for _, _, o in successes],
                WORKER_STOPPED,
            ],
        )
        return {row[0] for row in cursor.fetchall()}


def _record(outcomes) -> None:
    """Write every attempt and the resulting statuses in one transaction.

    Attempt rows are upserted: when a slow send comes back after the reconciler recorded its attempt as
    "unknown", the real outcome replaces it, and a delivery that did succeed is not sent again.
    """
    now = timezone.now()
    attempts: list[dict] = []
    audits: list[AuditEntry] = []
    settled: list[tuple] = []
    changes: list[tuple] = []
    with transaction.atomic():
        successes = [(d, started, o) for d, started, o in outcomes if isinstance(o, SendResult)]
        recorded = _successes_record(successes, now)
        for delivery, started, outcome in successes:
            attempts.append(
                {
                    "delivery_id": delivery.id,
                    "number": delivery.attempt_count,
                    "started_at": started,
                    "duration_ms": outcome.duration_ms,
                    "outcome": AttemptOutcome.SUCCESS,
                    "status_code": outcome.status_code,
                    "error": "",
                    "response_excerpt": outcome.excerpt,
                    "permanent": False,
                }
            )
            if delivery.id in recorded:
                changes.append(
                    (
                        delivery.id,
                        outcome.status,
                        {"status_code": outcome.status_code} if outcome.status_code is not None else {},
                    )
                )
                if delivery.run_id:
                    settled.append((delivery.run_id, delivery.step_id, True, ""))
                audits.append(
                    AuditEntry(
                        action=f"delivery.{outcome.status}",
                        product_id=delivery.product_id,
                        organization_id=delivery.organization_id,
                        target_type="delivery",
                        target_id=delivery.message_id,
                        data={
                            "attempt": delivery.attempt_count,
                            "status_code": outcome.status_code,
                            "channel": delivery.channel,
                        },
                    )
                )
        for delivery, started, outcome in outcomes:
            if isinstance(outcome, SendResult):
                continue
            scope = {
                "product_id": delivery.product_id,
                "organization_id": delivery.organization_id,
                "target_type": "delivery",
                "target_id": delivery.message_id,
            }
            number = delivery.attempt_count
            ours = Delivery.objects.filter(id=delivery.id, attempt_count=number, status__in=_OURS)
            exc: DeliveryError = outcome
            attempts.append(
                {
                    "delivery_id": delivery.id,
                    "number": number,
                    "started_at": started,
                    "duration_ms": exc.duration_ms,
                    "outcome": AttemptOutcome.FAILURE,
                    "status_code": exc.status_code,
                    "error": exc.message[:2000],
                    "response_excerpt": exc.excerpt,
                    "permanent": exc.permanent,
                }
            )
            detail = {
                "attempt": number,
                "status_code": exc.status_code,
                "error": exc.message[:500],
                "channel": delivery.channel,
            }
            audits.append(AuditEntry(action="delivery.attempt_failed", data=detail, **scope))
            if exc.permanent or number >= delivery.max_attempts:
                if ours.update(
                    status=DeliveryStatus.FAILED,
                    completed_at=now,
                    last_error=exc.message[:2000],
                    lease_until=None,
                    updated_at=now,
                ):
                    reason = "permanent error" if exc.permanent else f"gave up after {number} attempts"
                    changes.append((delivery.id, DeliveryStatus.FAILED, {"reason": reason, "error": exc.message[:500]}))
                    audits.append(AuditEntry(action="delivery.failed", data={**detail, "reason": reason}, **scope))
                    if delivery.run_id:
                        settled.append(
                            (
                                delivery.run_id,
                                delivery.step_id,
                                False,
                                f"Step '{delivery.step_id}': delivery "
                                f"{delivery.message_id} failed ({reason}): {exc.message}",
                            )
                        )
            else:
                delay = (
                    scheduled_delay(
                        delivery.retry_schedule,
                        number,
                        max_attempts=delivery.max_attempts,
                        retry_after=exc.retry_after,
                    )
                    if delivery.retry_schedule is not None
                    else retry_delay(
                        number,
                        retry_after=exc.retry_after,
                        base=delivery.backoff_seconds,
                        cap=delivery.max_backoff_seconds,
                    )
                )
                next_at = now + timedelta(seconds=delay)
                if ours.update(
                    status=DeliveryStatus.QUEUED,
                    next_attempt_at=next_at,
                    last_error=exc.message[:2000],
                    lease_until=None,
                    updated_at=now,
                ):
                    changes.append(
                        (
                            delivery.id,
                            DeliveryStatus.QUEUED,
                            {"retry_at": next_at.isoformat(), "error": exc.message[:500]},
                        )
                    )
                    audits.append(
                        AuditEntry(
                            action="delivery.retry_scheduled",
                            data={**detail, "next_attempt_at": next_at.isoformat(), "delay_seconds": round(delay, 3)},
                            **scope,
                        )
                    )
        _endpoints_health(outcomes, now)
        _metrics_add(outcomes, changes)
        status_events_record(changes, at=now)
        insert_rows(DeliveryAttempt, attempts, on_conflict=_ATTEMPT_UPSERT)
        audit_record_many(audits)
        runs_settle(settled)


# One statement writes only the endpoints whose failure streak starts, goes on or ends, so a batch of
# successes to healthy endpoints locks nothing, and rows are locked in id order (no two batches deadlock).
_STREAKS = """
UPDATE deliveries_webhookendpoint e
SET failing_since = CASE WHEN v.failed = 0 THEN NULL ELSE coalesce(e.failing_since, %(now)s) END,
    failed_attempts = CASE WHEN v.failed = 0 THEN 0 ELSE e.failed_attempts + v.failed END
FROM (SELECT * FROM unnest(%(ids)s::uuid[], %(failed)s::int[]) AS u(id, failed) ORDER BY id) v
WHERE e.id = v.id AND e.enabled AND (v.failed > 0 OR e.failing_since IS NOT NULL OR e.failed_attempts > 0)
"""


_FINAL = {DeliveryStatus.DELIVERED, DeliveryStatus.SENT, DeliveryStatus.FAILED}


def _metrics_add(outcomes, changes) -> None:
    """Count the batch's attempts (rowbell_delivery_attempts_total, by channel, provider and outcome), their
    durations (rowbell_delivery_attempt_duration_seconds) and the deliveries it finished
    (rowbell_deliveries_finished_total, by channel and status), in the batch's transaction."""
    added = metrics.increments()
    durations: dict[tuple[str, str], list[float]] = defaultdict(list)
    channel_of = {}
    for delivery, _, outcome in outcomes:
        provider = outcome.provider or "none"
        result = "success" if isinstance(outcome, SendResult) else "failure"
        added[
            metrics.series(metrics.DELIVERY_ATTEMPTS, channel=delivery.channel, provider=provider, outcome=result)
        ] += 1
        durations[(delivery.channel, provider)].append(outcome.duration_ms / 1000)
        channel_of[delivery.id] = delivery.channel
    for (channel, provider), values in durations.items():
        metrics.histogram_observe(added, metrics.DELIVERY_ATTEMPT_DURATION, values, channel=channel, provider=provider)
    for delivery_id, status, *_ in changes:
        if status in _FINAL:
            added[metrics.series(metrics.DELIVERIES_FINISHED, channel=channel_of[delivery_id], status=status)] += 1
    metrics.counters_add(added)


def _endpoints_health(outcomes, now) -> None:
    """Keep each webhook endpoint's failure streak (since when, and how many attempts): a success ends it.
    An endpoint whose attempts have all failed for longer than ROWBELL_ENDPOINT_DISABLE_AFTER_SECONDS and
    that failed at least ROWBELL_ENDPOINT_DISABLE_AFTER_FAILURES attempts since its last success, or that
    answered 410 Gone, is disabled and operators are told: a quiet endpoint whose first failure in days comes
    after a long silence is not disabled by it."""
    from django.db import connection

    ok: set = set()
    gone: set = set()
    failed: defaultdict = defaultdict(int)
    for delivery, _, outcome in outcomes:
        if not delivery.endpoint_id:
            continue
        if isinstance(outcome, SendResult):
            ok.add(delivery.endpoint_id)
        elif outcome.status_code == 410:
            gone.add(delivery.endpoint_id)
        else:
            failed[delivery.endpoint_id] += 1
    for endpoint_id in ok | gone:
        failed.pop(endpoint_id, None)
    streaks = {**dict.fromkeys(ok, 0), **failed}
    if streaks:
        ids = sorted(streaks)
        with connection.cursor() as cursor:
            cursor.execute(_STREAKS, {"ids": ids, "failed": [streaks[i] for i in ids], "now": now})
    if failed:
        span = settings.ROWBELL_ENDPOINT_DISABLE_AFTER_SECONDS
        least = settings.ROWBELL_ENDPOINT_DISABLE_AFTER_FAILURES
        for endpoint_id, since, count in WebhookEndpoint.objects.filter(
            id__in=list(failed), enabled=True, failing_since__isnull=False, failed_attempts__gte=least
        ).values_list("id", "failing_since", "failed_attempts"):
            if (now - since).total_seconds() >= span:
                endpoints_disable(
                    [endpoint_id],
                    actor="rowbell",
                    notify=True,
                    now=now,
                    reason=f"Every attempt failed since {since:%Y-%m-%d %H:%M:%S %Z} (longer than {_span_text(span)}), "
                    f"{count} attempts in all.",
                )
    if gone:
        endpoints_disable(list(gone), actor="rowbell", notify=True, now=now, reason="The endpoint answered 410 Gone.")


def _span_text(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} seconds"


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
    """Return deliveries stuck in `sending` past their lease (their worker died, or could not record the
    outcome) to the queue, their attempt recorded with an unknown outcome. The attempt counts: a delivery
    whose last allowed attempt outlived its lease fails ("gave up after N attempts"), its run settled as
    failed, so `max_attempts` bounds how many times a receiver can get one message, whatever fails."""
    now = timezone.now()
    stopped = WORKER_STOPPED
    with transaction.atomic():
        stuck = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(status=DeliveryStatus.SENDING, lease_until__lt=now)
            .values_list(
                "id",
                "attempt_count",
                "product_id",
                "organization_id",
                "message_id",
                "max_attempts",
                "run_id",
                "step_id",
            )[:10_000]
        )
        if not stuck:
            return 0
        spent = [s for s in stuck if s[1] >= s[5]]
        again = [s for s in stuck if s[1] < s[5]]
        Delivery.objects.filter(id__in=[s[0] for s in again]).update(
            status=DeliveryStatus.QUEUED,
            next_attempt_at=now,
            enqueued_at=None,
            lease_until=None,
            updated_at=now,
            last_error=stopped,
        )
        reason = "gave up after {} attempts: the last one's outcome is unknown (its worker stopped)"
        Delivery.objects.filter(id__in=[s[0] for s in spent]).update(
            status=DeliveryStatus.FAILED,
            completed_at=now,
            lease_until=None,
            updated_at=now,
            last_error=stopped,
        )
        status_events_record(
            [(s[0], DeliveryStatus.QUEUED, {"reason": "lease expired"}) for s in again]
            + [(s[0], DeliveryStatus.FAILED, {"reason": reason.format(s[1]), "error": stopped}) for s in spent],
            at=now,
        )
        DeliveryAttempt.objects.bulk_create(
            [
                DeliveryAttempt(delivery_id=i, number=n, started_at=now, outcome=AttemptOutcome.UNKNOWN, error=stopped)
                for i, n, *_ in stuck
            ],
            ignore_conflicts=True,
        )
        audit_record_many(
            [
                AuditEntry(
                    action="delivery.requeued",
                    target_type="delivery",
                    target_id=s[4],
                    product_id=s[2],
                    organization_id=s[3],
                    data={"reason": "lease expired"},
                )
                for s in again
            ]
            + [
                AuditEntry(
                    action="delivery.failed",
                    target_type="delivery",
                    target_id=s[4],
                    product_id=s[2],
                    organization_id=s[3],
                    data={"attempt": s[1], "reason": reason.format(s[1]), "error": stopped},
                )
                for s in spent
            ]
        )
        runs_settle(
            [
                (s[6], s[7], False, f"Step '{s[7]}': delivery {s[4]} failed ({reason.format(s[1])}).")
                for s in spent
                if s[6]
            ]
        )
    return len(stuck)
