"""The operators' console in a real browser: charts with data, releasing a held delivery to a receiver,
re-running a failed run with a real worker, and an action a group may not take."""

import random
from datetime import timedelta

import pytest
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from apps.connections.models import Connection
from apps.dashboard.groups import OPERATORS, READ_ONLY, REVIEWERS
from apps.deliveries.models import Delivery, DeliveryStatus, WebhookEndpoint
from apps.deliveries.services import deliveries_send
from apps.runs.engine import runs_execute
from apps.runs.models import Run, RunStatus
from apps.runs.services import request_start, trigger_create
from tests import factories
from tests.conftest import wait_until

from .conftest import log_in, screenshot, staff_user

pytestmark = pytest.mark.browser


def _trigger(product, key, recipient=None, data=None):
    request_id, _ = trigger_create(
        tenant=factories.tenant_of(product),
        workflow=key,
        priority="normal",
        recipients=[recipient or {"id": "u1"}],
        data=data or {},
    )
    run_ids = request_start(request_id=request_id)
    runs_execute(run_ids=run_ids)
    return Run.objects.get(id=run_ids[0])


def _history(product, now):
    """A day of deliveries: mostly delivered, some sent, opened, failed and bounced, with latencies."""
    rng = random.Random(7)
    statuses = ["delivered"] * 60 + ["sent"] * 15 + ["opened"] * 12 + ["clicked"] * 4 + ["failed"] * 6 + ["bounced"] * 3
    rows = [
        Delivery(
            product=product,
            channel=rng.choice(["webhook", "email", "sms"]),
            target="https://example.com",
            payload={},
            max_attempts=5,
            status=rng.choice(statuses),
        )
        for _ in range(600)
    ]
    created = Delivery.objects.bulk_create(rows)
    for d in created:
        at = now - timedelta(minutes=rng.uniform(1, 24 * 60 - 1))
        d.created_at, d.completed_at = at, at + timedelta(milliseconds=rng.lognormvariate(5, 0.8))
    Delivery.objects.bulk_update(created, ["created_at", "completed_at"], batch_size=500)


def test_the_dashboard_draws_its_charts_from_the_data(page, live_server, receiver):
    product, _ = factories.make_product("Acme Shop")
    now = timezone.now()
    _history(product, now)
    Connection.objects.create(
        product=product,
        name="shop-primary",
        host="db.internal",
        database="shop",
        user="rowbell",
        backlog=12,
        lag_seconds=3.4,
        last_poll_at=now,
        capture_installed_at=now,
        health_checked_at=now,
    )
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(product, key="order-shipped", sandbox=True, steps=[factories.webhook_step(endpoint)])
    _trigger(product, "order-shipped", data={"order": 1042})
    staff_user("ops")

    log_in(page, "ops")
    page.wait_for_selector("#chart-deliveries canvas")
    page.wait_for_selector("#chart-latency canvas")
    points = int(page.get_attribute("#chart-deliveries", "data-points"))
    assert points > 20  # one per (hour, status) with deliveries: drawn from the data, not empty
    labels = page.evaluate("window.rowbellCharts['chart-deliveries'].series.slice(1).map(s => s.label)")
    assert {"delivered", "failed", "opened"} <= set(labels)
    assert page.locator("#chart-deliveries .u-legend").inner_text().count("delivered") == 1
    assert page.inner_text("[data-figure=held]") == "1"
    assert page.inner_text("[data-figure=deliveries]") == "601"
    assert "shop-primary" in page.inner_text("#connections-health")
    screenshot(page, "dashboard")

    page.click("[data-figure=failure-rate]")  # the tile links into the filtered list
    page.wait_for_url("**/deliveries/delivery/?outcome=failure*")
    expected = Delivery.objects.filter(status__in=("failed", "bounced", "complained")).count()
    assert page.inner_text("#changelist-form .paginator").startswith(f"{expected} deliveries")


def test_a_reviewer_releases_a_held_webhook_and_it_arrives(page, live_server, receiver, processes):
    processes.worker()
    product, _ = factories.make_product("Acme Shop")
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(product, key="order-shipped", sandbox=True, steps=[factories.webhook_step(endpoint)])
    factories.make_workflow(
        product,
        key="welcome",
        sandbox=True,
        steps=[
            factories.email_step(
                subject="Welcome to Acme, {{ recipient.name }}",
                body="Hi {{ recipient.name }}, your account is ready.",
                html="<div style='font-family:sans-serif;padding:16px'><h2 style='color:#3b4a8f'>Welcome, "
                "{{ recipient.name }}!</h2><p>Your account is ready. Your first order ships free.</p>"
                "<p><a href='https://acme.example/start'>Get started</a></p></div>",
            )
        ],
    )
    factories.make_workflow(
        product,
        key="otp",
        sandbox=True,
        steps=[{"id": "code", "type": "notify", "channel": "sms", "text": "Your Acme code is {{ data.code }}."}],
    )
    ann = {"id": "u1", "name": "Ann", "email": "ann@example.com", "phone": "+15005550006"}
    _trigger(product, "welcome", ann)
    _trigger(product, "otp", ann, data={"code": "493 201"})
    run = _trigger(product, "order-shipped", ann, data={"order": 1042})
    held = Delivery.objects.get(run=run)
    assert held.status == DeliveryStatus.HELD and not receiver.requests
    staff_user("rev", REVIEWERS)

    log_in(page, "rev")
    page.click("a.tile[href*='/admin/review/']")
    page.wait_for_selector(f"article[data-message-id='{held.message_id}']")
    assert page.locator("article.review-item").count() == 3
    frame = page.frame_locator("article.review-item iframe").first
    assert frame.locator("h2").inner_text() == "Welcome, Ann!"  # the HTML email, rendered
    assert "Your Acme code is 493 201." in page.inner_text(".sms-bubble")
    screenshot(page, "review-queue")

    page.locator(f"article[data-message-id='{held.message_id}'] button[value=release]").click()
    page.wait_for_selector("text=Released 1 delivery.")
    assert receiver.wait_for(1), processes.logs["worker"].read_text()[-3000:]
    hit = receiver.requests[0]
    body = Webhook(WebhookEndpoint.objects.get(id=endpoint.id).secret).verify(hit["body"], hit["headers"])
    assert body["data"]["data"] == {"order": 1042} and hit["headers"]["webhook-id"] == held.message_id
    assert page.locator("article.review-item").count() == 2  # the released one left the queue
    assert wait_until(lambda: Delivery.objects.get(id=held.id).status == DeliveryStatus.DELIVERED)


def test_an_operator_reruns_a_failed_run_from_its_page(page, live_server, receiver, processes):
    product, _ = factories.make_product("Acme Shop")
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(
        product, key="order-shipped", retry={"max_attempts": 1}, steps=[factories.webhook_step(endpoint)]
    )
    receiver.answer((503, {}, b"maintenance"))
    run = _trigger(product, "order-shipped", data={"order": 1042})
    deliveries_send(delivery_ids=list(Delivery.objects.filter(run=run).values_list("id", flat=True)))
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    processes.worker()
    staff_user("op", OPERATORS)

    log_in(page, "op")
    page.goto(f"/admin/runs/run/{run.id}/change/")
    timeline = page.inner_text("#run-timeline")
    assert "HTTP 503" in timeline and "Run failed" in timeline
    page.click("button[data-action=rerun_from_failed_step]")
    page.wait_for_selector("text=Re-run:")
    rerun = Run.objects.get(rerun_of=run)
    assert f"(new run {rerun.id})" in page.inner_text("ul.messagelist")
    assert receiver.wait_for(2), processes.logs["worker"].read_text()[-3000:]
    assert wait_until(lambda: Run.objects.get(id=rerun.id).status == RunStatus.COMPLETED)
    page.goto(f"/admin/runs/run/{rerun.id}/change/")
    assert "HTTP 200" in page.inner_text("#run-timeline")


def test_a_read_only_operator_is_refused_release(page, live_server, receiver):
    product, _ = factories.make_product("Acme Shop")
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(product, key="order-shipped", sandbox=True, steps=[factories.webhook_step(endpoint)])
    held = Delivery.objects.get(run=_trigger(product, "order-shipped"))
    staff_user("ro", READ_ONLY)

    log_in(page, "ro")
    page.goto("/admin/review/")
    assert page.is_visible("#review-read-only")
    assert page.locator("button[value=release]").count() == 0
    # Posting the release anyway (as a hand-made form would) is refused.
    status = page.evaluate(
        """async (id) => {
        const token = document.cookie.split('; ').find(c => c.startsWith('csrftoken=')).split('=')[1];
        const body = new URLSearchParams({do: 'release', message_id: id, csrfmiddlewaretoken: token});
        const answer = await fetch('/admin/review/', {method: 'POST', body});
        return answer.status === 403 && (await answer.text()).includes('CSRF') ? 'csrf' : answer.status;
    }""",
        held.message_id,
    )
    assert status == 403  # refused for the group (the CSRF token was valid: see the next assertion)
    assert Delivery.objects.get(id=held.id).status == DeliveryStatus.HELD
    page.goto(f"/admin/runs/run/{held.run_id}/change/")
    assert page.locator("button[data-action]").count() == 0
    assert Delivery.objects.get(id=held.id).status == DeliveryStatus.HELD


# How many pixels of the chart's canvas are drawn in a series' colour (anti-aliased edges within a tolerance).
COLOURED_PIXELS = """([id, hex]) => {
  const canvas = document.querySelector(`#${id} canvas`);
  const want = [1, 3, 5].map(i => parseInt(hex.slice(i, i + 2), 16));
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let count = 0;
  for (let i = 0; i < pixels.length; i += 4) {
    if (pixels[i + 3] > 200 && want.every((v, k) => Math.abs(pixels[i + k] - v) < 40)) { count += 1; }
  }
  return count;
}"""


def test_the_latency_chart_draws_deliveries_that_all_fall_in_one_bucket(page, live_server):
    product, _ = factories.make_product("Acme Shop")
    at = timezone.now() - timedelta(minutes=90)
    created = Delivery.objects.bulk_create(
        [
            Delivery(
                product=product,
                channel="webhook",
                target="https://example.com",
                payload={},
                max_attempts=5,
                status="delivered",
            )
            for _ in range(5)
        ]
    )
    for i, delivery in enumerate(created):  # all within one hour: one bucket of the day's chart
        delivery.created_at, delivery.completed_at = at, at + timedelta(milliseconds=100 * (i + 1))
    Delivery.objects.bulk_update(created, ["created_at", "completed_at"])
    staff_user("ops")

    log_in(page, "ops")
    page.wait_for_selector("#chart-latency canvas")
    assert page.get_attribute("#chart-latency", "data-points") == "3"  # p50, p90 and p99 of the one bucket
    assert not page.is_visible("#chart-latency .chart-empty")
    for quantile, colour in (("p50", "#1e88e5"), ("p99", "#c62828")):
        assert page.evaluate(COLOURED_PIXELS, ["chart-latency", colour]) > 20, f"{quantile} is not drawn"
    # The chart fits its box (it is sized once the page has its final layout, and follows it).
    box, chart = (page.locator(s).bounding_box() for s in ("#chart-latency", "#chart-latency .uplot"))
    assert chart["x"] + chart["width"] <= box["x"] + box["width"] + 1
