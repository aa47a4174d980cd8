"""GET /api/v1/metrics on a known set of deliveries."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.deliveries.models import Delivery
from apps.runs.models import Run, RunStatus
from apps.workflows.models import Workflow
from tests import factories

pytestmark = pytest.mark.django_db


def _delivery(product, run, channel, status, *, latency_ms=None, age=timedelta(hours=1)):
    created = timezone.now() - age
    d = Delivery.objects.create(
        product=product,
        run=run,
        step_id=f"s{Delivery.objects.count()}",
        channel=channel,
        target="t",
        payload={},
        status=status,
        max_attempts=3,
    )
    Delivery.objects.filter(id=d.id).update(
        created_at=created, completed_at=created + timedelta(milliseconds=latency_ms) if latency_ms else None
    )


@pytest.fixture
def known(product):
    from apps.runs.models import TriggerRequest

    def run_for(key):
        factories.make_workflow(product, key=key, steps=[factories.email_step()])
        version = Workflow.objects.get(product=product, key=key).published_version
        request = TriggerRequest.objects.create(product=product, workflow_version=version, recipients=[], data={})
        return Run.objects.create(
            source="api",
            cause_id=str(request.id),
            product=product,
            workflow_version=version,
            request=request,
            recipient={"id": "u"},
            status=RunStatus.COMPLETED,
        )

    welcome = run_for("welcome")
    for status, latency in (("sent", 100), ("delivered", 200), ("opened", 300), ("clicked", 400), ("bounced", 500)):
        _delivery(product, welcome, "email", status, latency_ms=latency)
    _delivery(product, welcome, "email", "failed")
    _delivery(product, welcome, "email", "skipped")
    _delivery(product, welcome, "webhook", "delivered", latency_ms=50)
    _delivery(product, welcome, "email", "clicked", latency_ms=10, age=timedelta(days=3))  # out of range
    other = run_for("digest")
    _delivery(product, other, "sms", "sent", latency_ms=1000)
    return product


def test_metrics_per_workflow_and_channel(known, product_client):
    response = product_client.get("/api/v1/metrics")
    assert response.status_code == 200
    rows = {(m["workflow"], m["channel"]): m for m in response.json()["metrics"]}
    assert set(rows) == {("welcome", "email"), ("welcome", "webhook"), ("digest", "sms")}
    email = rows[("welcome", "email")]
    assert {
        k: email[k] for k in ("total", "sent", "delivered", "failed", "bounced", "skipped", "opened", "clicked")
    } == {"total": 7, "sent": 5, "delivered": 3, "failed": 1, "bounced": 1, "skipped": 1, "opened": 2, "clicked": 1}
    assert (email["open_rate"], email["click_rate"]) == (0.4, 0.2)
    # Latencies of the five that got through: 100..500 ms.
    assert email["latency_ms"] == {"p50": 300.0, "p90": 460.0, "p99": 496.0}
    assert rows[("digest", "sms")]["latency_ms"]["p50"] == 1000.0

    only = product_client.get("/api/v1/metrics", {"workflow": "digest"}).json()["metrics"]
    assert [(m["workflow"], m["channel"], m["total"]) for m in only] == [("digest", "sms", 1)]
    wide = product_client.get(
        "/api/v1/metrics", {"since": (timezone.now() - timedelta(days=7)).isoformat(), "channel": "email"}
    ).json()["metrics"]
    assert wide[0]["total"] == 8


def test_metrics_refuse_a_backwards_range(product_client):
    now = timezone.now()
    response = product_client.get(
        "/api/v1/metrics", {"since": now.isoformat(), "until": (now - timedelta(hours=1)).isoformat()}
    )
    assert response.status_code == 400 and response.json()["error"]["fields"][0]["field"] == "since"
