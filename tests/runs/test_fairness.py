"""One product's slow templates do not hold a worker from another product's runs: each task works for one
product at most ROWBELL_PRODUCT_SLICE_SECONDS, then that product's remaining runs wait, queued, on `low`."""

import pytest

from apps.deliveries.models import Delivery
from apps.runs.engine import runs_execute
from apps.runs.models import Run, RunStatus
from apps.runs.services import requests_start, trigger_create
from tests import factories

pytestmark = pytest.mark.django_db

SLOW = "{% for a in range(data.n) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"


@pytest.fixture
def slow_and_light(product, settings, hinted):
    settings.ROWBELL_TEMPLATE_RENDER_SECONDS = 0.2
    settings.ROWBELL_PRODUCT_SLICE_SECONDS = 0.3
    factories.make_workflow(product, key="w", steps=[factories.email_step(body=SLOW)])
    other, _ = factories.make_product(name="Other")
    factories.make_workflow(other, key="w", steps=[factories.email_step(body="Order {{ data.order }}")])
    return product, other


def _request(product, count, data):
    request_id, _ = trigger_create(
        tenant=factories.tenant_of(product),
        workflow="w",
        priority="normal",
        recipients=[{"id": f"u{i}", "name": f"U{i}", "email": f"u{i}@example.com"} for i in range(count)],
        data=data,
    )
    return request_id


def _split(run_ids):
    statuses = dict(Run.objects.filter(id__in=run_ids).values_list("id", "status"))
    return (
        [i for i in run_ids if statuses[i] == RunStatus.FAILED],
        [i for i in run_ids if statuses[i] == RunStatus.QUEUED],
    )


MANY = 12


def test_a_batch_leaves_a_product_s_remaining_runs_queued_once_its_time_slice_is_spent(
    slow_and_light, hinted, monkeypatch
):
    product, other = slow_and_light
    # Every run written queued and hinted, none executed by the task that creates them...
    monkeypatch.setattr("apps.runs.triggers.api.RUN_BATCH", 0)
    slow = requests_start(request_ids=[_request(product, MANY, {"n": 10_000})])
    light = requests_start(request_ids=[_request(other, MANY, {"order": 7})])
    assert _split(slow) == ([], slow) and _split(light) == ([], light)
    for queue in hinted.QUEUES:  # this test runs the batch itself
        hinted.redis.delete(queue)

    # ...and the worst case: the other product's runs come after the slow ones in the same batch.
    runs_execute(run_ids=slow + light)

    texts = set(Delivery.objects.filter(run_id__in=light).values_list("payload__text", flat=True))
    assert texts == {"Order 7"} and Delivery.objects.filter(run_id__in=light).count() == MANY
    stopped, waiting = _split(slow)
    # Two renders of 0.2 s spend the 0.3 s slice; the rest wait, queued, untouched, on `low`.
    assert 1 <= len(stopped) <= 3 and len(stopped) + len(waiting) == MANY
    assert hinted.redis.llen("low") == 1 and hinted.pending() == [("apps.runs.tasks.runs_execute", [waiting])]
    assert not Run.objects.filter(id__in=waiting, steps__isnull=False).exists()


def test_the_task_that_starts_requests_stops_at_a_product_s_time_slice_too(slow_and_light, hinted):
    product, other = slow_and_light
    # One hint's requests, the slow product's first: its runs are executed by the task that creates them.
    runs = requests_start(request_ids=[_request(product, MANY, {"n": 10_000}), _request(other, MANY, {"order": 7})])
    slow = list(Run.objects.filter(id__in=runs, product=product).order_by("id").values_list("id", flat=True))
    light = [i for i in runs if i not in slow]
    assert Delivery.objects.filter(run_id__in=light).count() == MANY  # the other product's, all of them
    stopped, waiting = _split(slow)
    assert 1 <= len(stopped) <= 3 and len(stopped) + len(waiting) == MANY
    assert hinted.redis.llen("low") == 1 and hinted.pending() == [("apps.runs.tasks.runs_execute", [waiting])]
    assert not Run.objects.filter(id__in=waiting, steps__isnull=False).exists()
