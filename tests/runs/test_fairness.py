"""One product's slow templates do not hold a worker from another product's runs: each task works for one
product at most ROWBELL_PRODUCT_SLICE_SECONDS, then that product's remaining runs wait, queued, on `low`."""

import pytest

from apps.deliveries.models import Delivery
from apps.runs.engine import runs_execute
from apps.runs.models import Run, RunStatus
from apps.runs.services import INLINE_RUNS, request_start, trigger_create
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
    request_id, _ = trigger_create(tenant=factories.tenant_of(product), workflow="w", priority="normal",
                                   recipients=[{"id": f"u{i}", "name": f"U{i}", "email": f"u{i}@example.com"}
                                               for i in range(count)], data=data)
    return request_id


def _split(run_ids):
    statuses = dict(Run.objects.filter(id__in=run_ids).values_list("id", "status"))
    return ([i for i in run_ids if statuses[i] == RunStatus.FAILED],
            [i for i in run_ids if statuses[i] == RunStatus.QUEUED])


def test_a_batch_leaves_a_product_s_remaining_runs_queued_once_its_time_slice_is_spent(
        slow_and_light, hinted, django_capture_on_commit_callbacks):
    product, other = slow_and_light
    many = INLINE_RUNS + 2  # fanned out in batches, not run inside the request's task
    with django_capture_on_commit_callbacks(execute=True):
        slow = request_start(request_id=_request(product, many, {"n": 10_000}))
        light = request_start(request_id=_request(other, many, {"order": 7}))
    for queue in hinted.QUEUES:  # this test runs the batch itself
        hinted.redis.delete(queue)

    # The worst case: the other product's runs come after the slow ones in the same batch.
    with django_capture_on_commit_callbacks(execute=True):
        runs_execute(run_ids=slow + light)

    texts = set(Delivery.objects.filter(run_id__in=light).values_list("payload__text", flat=True))
    assert texts == {"Order 7"} and Delivery.objects.filter(run_id__in=light).count() == many
    stopped, waiting = _split(slow)
    # Two renders of 0.2 s spend the 0.3 s slice; the rest wait, queued, untouched, on `low`.
    assert 1 <= len(stopped) <= 3 and len(stopped) + len(waiting) == many
    assert hinted.redis.llen("low") == 1 and hinted.pending() == [("apps.runs.tasks.runs_execute", [waiting])]
    assert not Run.objects.filter(id__in=waiting, steps__isnull=False).exists()


def test_a_request_s_own_task_stops_at_the_time_slice_too(slow_and_light, hinted):
    product, _ = slow_and_light
    runs = request_start(request_id=_request(product, INLINE_RUNS, {"n": 10_000}))
    stopped, waiting = _split(runs)
    assert 1 <= len(stopped) <= 3 and len(stopped) + len(waiting) == INLINE_RUNS
    assert hinted.redis.llen("low") == 1 and hinted.pending() == [("apps.runs.tasks.runs_execute", [waiting])]
