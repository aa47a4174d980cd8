"""Telling operators about failed runs: once per failure, without flooding them.

A failed run leaves an Escalation row in the transaction that fails it. A beat tick gathers each
product's pending rows into one notice, at most one per product per ROWBELL_ESCALATION_INTERVAL_SECONDS
(a broken provider failing thousands of runs makes one notice with a count, not thousands):

- an email to Django's ADMINS, sent before the rows are marked notified (a crash repeats a notice, it
  never loses one);
- a signed webhook to the product's escalation endpoint, if it has one, queued as a delivery in the same
  transaction (retried like every webhook).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.core.mail import mail_admins
from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.deliveries.channels import Rendered
from apps.deliveries.services import deliveries_write, delivery_build

from .models import Escalation

logger = logging.getLogger(__name__)

LISTED = 20  # failures listed by name in one notice; the rest are counted
PER_NOTICE = 10_000


def escalations_send() -> int:
    """Send the notices that are due; return how many failures they told about."""
    told = 0
    for product_id in (
        Escalation.objects.filter(notified_at__isnull=True).order_by().values_list("product_id", flat=True).distinct()
    ):
        try:
            told += _notify(product_id)
        except Exception:  # e.g. the mail server is down: the rows stay pending, the next tick tries again
            logger.exception("Cannot send the failure notice of product %s now", product_id)
    return told


def _notify(product_id) -> int:
    from apps.tenants.models import Product

    now = timezone.now()
    with transaction.atomic():
        # The product's row lock serializes its notices across beat ticks and processes.
        product = (
            Product.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("escalation_webhook")
            .filter(id=product_id)
            .first()
        )
        if product is None:
            return 0
        last = (
            Escalation.objects.filter(product_id=product_id, notified_at__isnull=False)
            .order_by("-notified_at")
            .values_list("notified_at", flat=True)
            .first()
        )
        if last and now - last < timedelta(seconds=settings.ROWBELL_ESCALATION_INTERVAL_SECONDS):
            return 0
        pending = list(
            Escalation.objects.filter(product_id=product_id, notified_at__isnull=True)
            .select_related("run__workflow_version__workflow")
            .order_by("id")[:PER_NOTICE]
        )
        if not pending:
            return 0
        failures = [
            {
                "run_id": e.run_id,
                "workflow": e.run.workflow_version.workflow.key,
                "version": e.run.workflow_version.version,
                "error": e.error[:500],
                "failed_at": e.created_at.isoformat(),
            }
            for e in pending
        ]
        if settings.ADMINS:
            mail_admins(_subject(product, len(failures)), _body(product, failures), fail_silently=False)
        endpoint = product.escalation_webhook
        if endpoint is not None and endpoint.enabled:
            _webhook(product, endpoint, failures, now)
        Escalation.objects.filter(id__in=[e.id for e in pending]).update(notified_at=now)
        audit_record(
            action="escalation.sent",
            target_type="product",
            target_id=product.id,
            product_id=product.id,
            data={
                "failures": len(failures),
                "email": bool(settings.ADMINS),
                "webhook": str(endpoint.id) if endpoint is not None and endpoint.enabled else None,
                "runs": [f["run_id"] for f in failures[:LISTED]],
            },
        )
    return len(pending)


def _subject(product, count: int) -> str:
    return f"{count} failed run{'s' if count != 1 else ''} in {product.name}"


def _body(product, failures: list[dict]) -> str:
    lines = [
        f"Rowbell: {len(failures)} run(s) of product {product.name} ({product.id}) failed since the last notice.",
        "",
    ]
    for f in failures[:LISTED]:
        lines.append(
            f"- run {f['run_id']}, workflow {f['workflow']} v{f['version']}, at {f['failed_at']}: {f['error']}"
        )
    if len(failures) > LISTED:
        lines.append(f"... and {len(failures) - LISTED} more.")
    lines += ["", "Re-run them from the admin (Runs, action 're-run') or with POST /api/v1/runs/{id}/rerun."]
    return "\n".join(lines)


def _webhook(product, endpoint, failures: list[dict], now) -> None:
    """Queue the signed `runs.failed` webhook to the product's escalation endpoint, in the notice's
    transaction (sent after commit, retried like every webhook)."""
    payload = {
        "type": "runs.failed",
        "timestamp": now.isoformat(),
        "data": {"product_id": str(product.id), "count": len(failures), "failures": failures[:LISTED]},
    }
    delivery, _ = delivery_build(
        channel="webhook",
        product_id=product.id,
        step_id="escalation",
        priority="high",
        rendered=Rendered(target=endpoint.url_masked, payload=payload, endpoint_id=endpoint.id, endpoint=endpoint),
    )
    deliveries_write([delivery])
