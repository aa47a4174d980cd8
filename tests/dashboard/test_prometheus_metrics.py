"""GET /metrics: Rowbell's Prometheus exposition, behind a bearer token: deliveries by outcome and attempt
latency per channel and provider, runs by status, queue depths, pick-up lag and backlog per connection."""

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from apps.deliveries.models import Delivery
from apps.deliveries.services import deliveries_send
from tests import factories
from tests.deliveries.test_webhook_delivery import _queued

pytestmark = pytest.mark.django_db

TOKEN = "scrape-me-0123456789"


@pytest.fixture
def token(settings):
    settings.ROWBELL_METRICS_TOKEN = TOKEN


def _scrape(client) -> dict:
    """{(sample name, frozenset of labels): value}."""
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def test_metrics_are_off_without_a_token_and_refused_without_the_right_one(client, settings, token):
    settings.ROWBELL_METRICS_TOKEN = ""
    off = client.get("/metrics")
    assert off.status_code == 404 and "ROWBELL_METRICS_TOKEN" in off.json()["error"]["message"]
    settings.ROWBELL_METRICS_TOKEN = TOKEN
    for header in ({}, {"HTTP_AUTHORIZATION": "Bearer wrong"}, {"HTTP_AUTHORIZATION": f"Basic {TOKEN}"}):
        refused = client.get("/metrics", **header)
        assert refused.status_code == 401 and "Authorization: Bearer" in refused.json()["error"]["message"]


def test_deliveries_runs_and_queues_are_counted(client, product, receiver, token):
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(product, key="w", steps=[factories.webhook_step(endpoint)])
    receiver.answer(503)  # the first attempt fails, the second succeeds
    [delivery] = Delivery.objects.filter(request=_queued(product))
    for _ in range(2):
        Delivery.objects.filter(id=delivery.id).update(next_attempt_at=timezone.now())
        deliveries_send(delivery_ids=[delivery.id])
    waiting = factories.make_workflow(product, key="held", steps=[factories.webhook_step(endpoint)], sandbox=True)
    assert waiting is not None

    seen = _scrape(client)
    webhook = {("channel", "webhook"), ("provider", "webhook")}
    assert seen[("rowbell_delivery_attempts_total", frozenset(webhook | {("outcome", "success")}))] == 1
    assert seen[("rowbell_delivery_attempts_total", frozenset(webhook | {("outcome", "failure")}))] == 1
    assert seen[("rowbell_delivery_attempt_duration_seconds_count", frozenset(webhook))] == 2
    assert seen[("rowbell_delivery_attempt_duration_seconds_bucket", frozenset(webhook | {("le", "+Inf")}))] == 2
    assert (
        seen[("rowbell_deliveries_finished_total", frozenset({("channel", "webhook"), ("status", "delivered")}))] == 1
    )
    assert seen[("rowbell_runs", frozenset({("status", "queued")}))] == 0
    assert ("rowbell_queue_messages", frozenset({("queue", "high")})) in seen
    # Counted once however many processes did the work: a second scrape says the same.
    assert _scrape(client)[("rowbell_delivery_attempts_total", frozenset(webhook | {("outcome", "success")}))] == 1


def test_a_connection_s_stored_lag_and_backlog_are_shown(client, product, token):
    from apps.connections.models import Connection

    connection = Connection.objects.create(
        product=product,
        name="shop",
        host="127.0.0.1",
        port=5432,
        database="shop",
        user="rowbell",
        password="x",
        capture_installed_at=timezone.now(),
        backlog=42,
        lag_seconds=3.5,
        last_poll_at=timezone.now(),
    )
    seen = _scrape(client)
    labels = frozenset({("connection", str(connection.id)), ("name", "shop")})
    assert seen[("rowbell_pickup_backlog_events", labels)] == 42
    assert seen[("rowbell_pickup_lag_seconds", labels)] == 3.5
    assert 0 <= seen[("rowbell_pickup_last_poll_age_seconds", labels)] < 60
