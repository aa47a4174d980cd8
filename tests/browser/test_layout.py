"""No console page is wider than the window, and no column is cut off, at the widths operators' laptops have:
every list and the pages operators read most, filled with the long names, errors and JSON real data has."""

import uuid
from datetime import timedelta

import pytest
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.connections.models import Connection, Event
from apps.core.models import QueuedAction
from apps.deliveries.models import Delivery, DeliveryAttempt, DeliveryEvent, ProviderConfig
from apps.runs.models import Batch, BatchItem, Escalation, Run, RunStep, TriggerRequest
from apps.tenants.models import ApiKey
from tests import factories

from .conftest import log_in, staff_user

pytestmark = pytest.mark.browser

WIDTHS = (1280, 1366, 1440)

LONG_TABLE = "public.customer_order_line_items_archive_2024_q4_partitioned_by_region_and_fulfilment_centre"
LONG_HOST = "customer-production-db-cluster-01.cluster-c9akciq32lmn.eu-central-1.rds.amazonaws.com"
LONG_URL = (
    "https://hooks.example-corporation.com/services/T0123456789/B0123456789/"
    "aVeryLongWebhookTokenWithoutAnyBreaksInItWhatsoeverAbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
)
LONG_ERROR = (
    'psycopg.OperationalError: connection failed: connection to server at "10.20.30.40", port 5432 failed: '
    "FATAL: remaining connection slots are reserved for roles with the SUPERUSER attribute; "
    "template_render_failed:'dict_object'_has_no_attribute_'customer_shipping_address_line_two_for_international_orders'"
)
# As long as a key the audit trail can name (its target_id holds 64 characters).
LONG_KEY = "order-shipped-to-customer-with-tracking-number-and-delivery-eta"
LONG_NAME = "Acme International Shipping and Fulfilment Services (Europe, Middle East and Africa) Limited"
LONG_JSON = {
    "order": {
        "id": 1042,
        "lines": [{"sku": "SKU-" + "X" * 120, "note": "a" * 300}],
        "shipping_address_line_two_for_international_orders": "Unit 12, " + "Building" * 30,
    }
}


def long_world(receiver_url: str) -> dict:
    """Rows of every listed model, each with the longest values their fields hold in practice."""
    product, _ = factories.make_product(LONG_NAME)
    organization, _ = factories.make_organization(product, name=LONG_NAME + " Subsidiary")
    endpoint = factories.make_endpoint(product, receiver_url + "/" + "x" * 200)
    workflow = factories.make_workflow(product, key=LONG_KEY, steps=[factories.webhook_step(endpoint, "h" * 64)])
    workflow.name = LONG_NAME
    workflow.save(update_fields=["name"])
    version = workflow.published_version
    now = timezone.now()
    connection = Connection.objects.create(
        product=product,
        name="warehouse-replica-eu-central-1-primary-reporting-and-analytics",
        host=LONG_HOST,
        database="analytics_warehouse_production_2024_eu_central_reporting",
        user="rowbell_capture_role_for_the_analytics_warehouse",
        last_error=LONG_ERROR,
        last_error_at=now,
        last_poll_at=now,
        backlog=123456789,
        lag_seconds=98765.4,
        health_checked_at=now,
        capture_problems=[
            {
                "capture": "c" * 63,
                "table": LONG_TABLE,
                "kind": "missing_column",
                "detail": f"The column shipping_address_line_two_for_international_orders of {LONG_TABLE} no "
                "longer exists.",
                "repairable": False,
                "workflows": [LONG_KEY],
                "endpoints": [str(endpoint.id)],
            }
        ],
        capture_problems_since=now,
        check_report={"captures": {"wanted": ["c" * 63], "installed": [], "missing": ["c" * 63], "unused": []}},
    )
    Event.objects.create(
        connection=connection,
        source_id=1,
        xid=1,
        capture="c" * 63,
        table_name=LONG_TABLE,
        op="UPDATE",
        ids=[[f"{'k' * 80}-{i}", i] for i in range(20)],
        captured_at=now,
    )
    request = TriggerRequest.objects.create(
        product=product,
        organization=organization,
        workflow_version=version,
        recipients=[{"id": "u" * 200, "email": "a" * 60 + "@example-corporation.com"}],
        data=LONG_JSON,
        body_hash="x",
        actor="staff:" + "a" * 100,
    )
    run = Run.objects.create(
        source="api",
        cause_id=str(request.id),
        request=request,
        product=product,
        organization=organization,
        workflow_version=version,
        recipient={"id": "u" * 200, "email": "a" * 60 + "@example-corporation.com", "profile": LONG_JSON},
        status="failed",
        state={"failed_at": 0, "steps": {"h" * 64: LONG_JSON}},
        error=LONG_ERROR,
        completed_at=now,
    )
    rerun = Run.objects.create(
        source="api",
        cause_id=str(request.id),
        request=request,
        product=product,
        organization=organization,
        workflow_version=version,
        recipient={"id": "u" * 200},
        status="waiting",
        waiting_on="delivery",
        resume_at=now + timedelta(days=3),
        rerun_of=run,
    )
    RunStep.objects.create(run=run, step_id="h" * 64, index=0, type="notify", status="failed", error=LONG_ERROR)
    Escalation.objects.create(run=run, product=product, error=LONG_ERROR, notified_at=now)
    delivery = Delivery.objects.create(
        product=product,
        organization=organization,
        run=run,
        request=request,
        step_id="h" * 64,
        channel="webhook",
        endpoint=endpoint,
        target=LONG_URL,
        recipient_id="u" * 200,
        payload=LONG_JSON,
        max_attempts=5,
        status="failed",
        last_error=LONG_ERROR,
        provider_message_id="p" * 200,
    )
    DeliveryAttempt.objects.create(
        delivery=delivery,
        number=1,
        started_at=now,
        duration_ms=30000,
        outcome="failure",
        status_code=503,
        error=LONG_ERROR,
        response_excerpt='{"error":"' + "e" * 500 + '"}',
    )
    DeliveryEvent.objects.create(delivery=delivery, status="failed", at=now, detail={"error": LONG_ERROR})
    Delivery.objects.create(
        product=product,
        channel="webhook",
        endpoint=endpoint,
        target=LONG_URL,
        payload=LONG_JSON,
        max_attempts=5,
        status="held",
    )
    batch = Batch.objects.create(
        workflow_version=version, step_id="b" * 64, key="k" * 200, owner=rerun, closes_at=now, size=1
    )
    BatchItem.objects.create(batch=batch, run=rerun, item=LONG_JSON)
    for action in ("connection.capture_drift", "run.rerun", "workflow.published"):
        AuditEvent.objects.create(
            product=product,
            organization=organization,
            actor="staff:" + "averyveryverylongusername" * 4,
            action=action,
            target_type="workflow",
            target_id=LONG_KEY[:64],
            data={"problems": [LONG_JSON], "error": LONG_ERROR},
        )
    QueuedAction.objects.create(
        name="connection.check",
        target_type="connection",
        target_id=str(connection.id),
        actor="staff:" + "a" * 100,
        status="failed",
        error=LONG_ERROR,
        outcome=LONG_JSON,
    )
    ApiKey.objects.create(
        id=f"k.{uuid.uuid4().hex}",
        prefix="k" * 8,
        hashed_key=uuid.uuid4().hex,
        name=LONG_NAME[:50],
        scope="organization",
        product=product,
        organization=organization,
    )
    ProviderConfig.objects.create(
        product=product, organization=organization, channel="sms", provider="twilio", credentials="{}"
    )
    return {
        "run": run,
        "connection": connection,
        "delivery": delivery,
        "workflow": workflow,
        "escalation": run.escalation,
    }


def _pages(world) -> list[str]:
    """Every list of the console, and the pages operators read most."""
    lists = sorted(
        reverse(f"admin:{m._meta.app_label}_{m._meta.model_name}_changelist")
        for m, model_admin in admin.site._registry.items()
    )
    return [
        reverse("admin:index"),
        reverse("admin:review_queue"),
        *lists,
        reverse("admin:runs_run_change", args=[world["run"].id]),
        reverse("admin:runs_escalation_change", args=[world["escalation"].id]),
        reverse("admin:connections_connection_change", args=[world["connection"].id]),
        reverse("admin:deliveries_delivery_change", args=[world["delivery"].id]),
        reverse("admin:workflows_workflow_change", args=[world["workflow"].id]),
    ]


# What is cut off on the page: the page wider than the window, or a table cell (a column) whose right edge is past
# the window or hidden in a scrolling box that is narrower than its table.
OVERFLOW = """() => {
  const width = window.innerWidth;
  const found = [];
  if (document.documentElement.scrollWidth > width) {
    found.push(`page ${document.documentElement.scrollWidth}px wide`);
  }
  for (const cell of document.querySelectorAll("th, td")) {
    const box = cell.getBoundingClientRect();
    if (!box.width || cell.closest(".visually-hidden")) { continue; }  // the sidebar's headings for screen readers
    const name = (cell.closest("table").id || "table") + ": " + cell.textContent.trim().slice(0, 40);
    if (box.right > width + 0.5) { found.push(`${name} ends at ${Math.round(box.right)}px`); continue; }
    for (let outer = cell.parentElement; outer && outer !== document.body; outer = outer.parentElement) {
      const style = getComputedStyle(outer);
      if (["auto", "scroll", "hidden", "clip"].includes(style.overflowX)
          && box.right > outer.getBoundingClientRect().right + 0.5) {
        found.push(`${name} hidden past the right edge of ${outer.className || outer.tagName}`);
        break;
      }
    }
  }
  return [...new Set(found)].slice(0, 8);
}"""


def test_no_page_is_wider_than_the_window_nor_cuts_a_column_off(browser, live_server, receiver):
    world = long_world(receiver.url())
    staff_user("ops")
    problems = {}
    for width in WIDTHS:
        context = browser.new_context(base_url=live_server.url, viewport={"width": width, "height": 900})
        page = context.new_page()
        log_in(page, "ops")
        for url in _pages(world):
            page.goto(url)
            page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
            found = page.evaluate(OVERFLOW)
            if found:
                problems[f"{width}px {url}"] = found
        context.close()
    assert not problems, "\n".join(f"{where}: {found}" for where, found in problems.items())
