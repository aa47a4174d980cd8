import base64
import json

import pytest
from django.core.management import call_command

from apps.runs.models import TriggerRequest
from apps.runs.services import requests_dispatch, trigger_create
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


def _trigger(product, priority, rid):
    request_id, _ = trigger_create(
        tenant=factories.tenant_of(product), workflow="w", recipients=[{"id": rid}], data={}, priority=priority
    )
    return str(request_id)


def _hinted(test_redis, queue):
    out = []
    for raw in test_redis.lrange(queue, 0, -1):
        message = json.loads(raw)
        assert message["headers"]["task"] == "apps.runs.tasks.requests_start"
        out.extend(json.loads(base64.b64decode(message["body"]))[0][0])
    return out


@pytest.fixture(autouse=True)
def _no_linger(monkeypatch):
    """Passes hint whatever waits (the linger has its own test)."""
    monkeypatch.setattr("apps.runs.services.DISPATCH_LINGER", 0)


def test_dispatch_hints_each_request_once_on_the_queue_of_its_priority(product, test_redis):
    factories.make_workflow(product, key="w", steps=[factories.email_step()])
    normal = [_trigger(product, "normal", f"n{i}") for i in range(3)]
    high = _trigger(product, "high", "h")
    low = _trigger(product, "low", "l")

    assert requests_dispatch() == 5
    assert requests_dispatch() == 0
    assert sorted(_hinted(test_redis, "normal")) == sorted(normal)
    assert _hinted(test_redis, "high") == [high]
    assert _hinted(test_redis, "low") == [low]
    assert not TriggerRequest.objects.filter(enqueued_at__isnull=True).exists()


def test_dispatch_takes_high_priority_first_when_limited(product, test_redis):
    factories.make_workflow(product, key="w", steps=[factories.email_step()])
    for i in range(3):
        _trigger(product, "normal", f"n{i}")
    high = _trigger(product, "high", "h")
    assert requests_dispatch(limit=1) == 1
    assert _hinted(test_redis, "high") == [high] and _hinted(test_redis, "normal") == []


def test_the_dispatcher_command_runs_a_pass(product, test_redis):
    factories.make_workflow(product, key="w", steps=[factories.email_step()])
    request_id = _trigger(product, "normal", "x")
    call_command("run_dispatcher", "--once", stdout=open("/dev/null", "w"))
    assert _hinted(test_redis, "normal") == [request_id]


def test_a_pass_waits_for_a_hint_s_worth_of_requests_or_for_the_oldest_to_linger(product, test_redis, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    monkeypatch.setattr("apps.runs.services.DISPATCH_LINGER", 60)
    monkeypatch.setattr("apps.runs.services.DISPATCH_BATCH", 3)
    factories.make_workflow(product, key="w", steps=[factories.email_step()])
    first = [_trigger(product, "normal", f"a{i}") for i in range(2)]
    assert requests_dispatch() == 0  # two fresh requests: not yet
    third = _trigger(product, "normal", "a2")
    assert requests_dispatch() == 3 and sorted(_hinted(test_redis, "normal")) == sorted(first + [third])
    late = _trigger(product, "normal", "b")
    assert requests_dispatch() == 0
    TriggerRequest.objects.filter(id=late).update(created_at=timezone.now() - timedelta(seconds=61))
    assert requests_dispatch() == 1  # it waited long enough
