"""The enqueue policy (apps/core/hints.py): work is hinted after its transaction commits, and that never
raises. With the broker unreachable the committed rows stay, the caller goes on, one warning names the task
and the ids, and once the broker is back the reconcilers send the hints again and the work completes.

"The broker is down" here means CELERY_BROKER_URL points at a port nothing listens on: the test Redis is
never stopped."""

import logging
import socket
import threading
import time
from datetime import timedelta

import pytest
from django.core import mail
from django.db import transaction
from django.utils import timezone

from apps.core import hints
from apps.core.actions import action_queue, queued_actions_reconcile
from apps.core.models import QueuedAction
from apps.runs.engine import runs_resume_due
from apps.runs.models import RequestStatus, Run, RunStatus, TriggerRequest
from apps.runs.services import request_start, requests_dispatch, requests_start, runs_reconcile, trigger_create
from tests import factories
from tests.conftest import client_for, free_port

pytestmark = pytest.mark.django_db(transaction=True)

RUNS_EXECUTE = "apps.runs.tasks.runs_execute"
REQUESTS_START = "apps.runs.tasks.requests_start"


@pytest.fixture(autouse=True)
def _broker_emptied(test_redis):
    """Hints the setup sent while the broker was up land in the test Redis: emptied before and after."""


@pytest.fixture(autouse=True)
def _no_linger(monkeypatch):
    """A dispatcher pass hints whatever waits."""
    monkeypatch.setattr("apps.runs.services.DISPATCH_LINGER", 0)


@pytest.fixture
def fan_out(monkeypatch):
    """The task that starts requests executes none of their runs itself: every run is hinted to workers
    after commit."""
    monkeypatch.setattr("apps.runs.triggers.api.RUN_BATCH", 0)


@pytest.fixture
def broker_down(settings):
    """The broker is unreachable: a closed port. The hints' cached client is dropped on both sides."""
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"
    hints._redis = None
    yield settings.CELERY_BROKER_URL
    hints._redis = None


@pytest.fixture
def hint_warnings(caplog):
    """The warnings apps.core.hints logged: (message, whether a traceback came with it)."""
    caplog.set_level(logging.WARNING, logger="apps.core.hints")

    def read():
        return [(r.getMessage(), r.exc_info is not None) for r in caplog.records if r.name == "apps.core.hints"]

    return read


def _request(product, recipients=1, key="w"):
    request_id, _ = trigger_create(
        tenant=factories.tenant_of(product),
        workflow=key,
        recipients=[{"id": f"u{i}", "email": f"u{i}@example.com", "name": f"U{i}"} for i in range(recipients)],
        data={"order": 7},
        priority="normal",
    )
    return str(request_id)


def _assert_one_warning_naming(hint_warnings, task, ids):
    logged = hint_warnings()
    assert len(logged) == 1, logged
    text, traceback = logged[0]
    assert task in text and "Left for the reconciler" in text and not traceback, logged
    for i in ids:
        assert str(i) in text, (i, text)


# --- (a) committed work stays, the caller sees no exception, one warning names the task and the ids ----


def test_dispatch_with_the_broker_down_claims_the_requests_and_does_not_raise(product, broker_down, hint_warnings):
    factories.make_workflow(product, key="w", steps=[factories.email_step()])
    ids = [_request(product) for _ in range(3)]
    assert requests_dispatch() == 3  # the hints failed after commit: no exception
    assert (
        TriggerRequest.objects.filter(id__in=ids, status=RequestStatus.ACCEPTED, enqueued_at__isnull=False).count() == 3
    )
    _assert_one_warning_naming(hint_warnings, REQUESTS_START, ids)


def test_a_fanned_out_request_start_keeps_its_runs_when_the_hint_fails(product, broker_down, hint_warnings, fan_out):
    factories.make_workflow(product, key="w", steps=[factories.email_step()])
    request_id = _request(product, recipients=12)  # more than the task executes itself: hinted after commit
    run_ids = request_start(request_id=request_id)
    assert len(run_ids) == 12
    assert TriggerRequest.objects.get(id=request_id).status == RequestStatus.STARTED
    assert Run.objects.filter(id__in=run_ids, status=RunStatus.QUEUED).count() == 12
    _assert_one_warning_naming(hint_warnings, RUNS_EXECUTE, run_ids)


def test_a_resumed_wait_stays_queued_when_its_hint_fails(product, settings, hint_warnings):
    factories.make_workflow(
        product, key="w", steps=[{"id": "pause", "type": "wait", "duration": "1h"}, factories.email_step()]
    )
    request_start(request_id=_request(product))
    run = Run.objects.get()
    assert run.status == RunStatus.WAITING
    Run.objects.filter(id=run.id).update(resume_at=timezone.now() - timedelta(seconds=1))
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"
    hints._redis = None
    try:
        assert runs_resume_due() == 1
    finally:
        hints._redis = None
    assert Run.objects.get(id=run.id).status == RunStatus.QUEUED
    _assert_one_warning_naming(hint_warnings, RUNS_EXECUTE, [run.id])


def test_a_rerun_answers_201_when_its_hint_fails(product_with_key, settings, hint_warnings):
    product, key = product_with_key
    factories.make_workflow(product, key="w", steps=[factories.email_step(subject="{{ data.missing }}")])
    request_start(request_id=_request(product))
    run = Run.objects.get()
    assert run.status == RunStatus.FAILED
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"
    hints._redis = None
    try:
        response = client_for(key).post(f"/api/v1/runs/{run.id}/rerun", {}, format="json")
    finally:
        hints._redis = None
    assert response.status_code == 201, response.content
    new = Run.objects.get(id=response.json()["id"])
    assert new.status == RunStatus.QUEUED and new.rerun_of_id == run.id
    _assert_one_warning_naming(hint_warnings, RUNS_EXECUTE, [new.id])


def test_the_reconcile_tick_goes_on_when_the_broker_is_down(product, settings, broker_down, hint_warnings, fan_out):
    factories.make_workflow(product, key="w", steps=[factories.email_step()])
    stale_request = _request(product)
    fanned = request_start(request_id=_request(product, recipients=11))
    fresh = _request(product)  # never dispatched: the tick's own dispatch claims it
    settings.ROWBELL_REQUEUE_AFTER_SECONDS = 0
    TriggerRequest.objects.filter(id=stale_request).update(enqueued_at=timezone.now() - timedelta(minutes=5))
    before = len(hint_warnings())  # the fan-out's own warning is not the tick's

    outcome = runs_reconcile()  # each of its sends fails after commit; none raises, the tick's dispatch still runs
    assert outcome["requests"] == 1 and outcome["runs"] == 11 and outcome["dispatched"] == 1
    assert TriggerRequest.objects.get(id=fresh).enqueued_at is not None
    logged = hint_warnings()[before:]
    assert len(logged) == 3 and not any(traceback for _, traceback in logged), logged  # one per send
    text = " ".join(m for m, _ in logged)
    assert REQUESTS_START in text and RUNS_EXECUTE in text and stale_request in text and fresh in text
    assert all(str(i) in text for i in fanned)


def test_queued_actions_reconcile_names_the_actions_it_could_not_hint(product, settings, broker_down, hint_warnings):
    with transaction.atomic():
        action = action_queue(name="connection.check", target_type="connection", target_id="c1", args={}, actor="test")
    settings.ROWBELL_REQUEUE_AFTER_SECONDS = 0
    before = len(hint_warnings())
    assert queued_actions_reconcile() == 1
    assert QueuedAction.objects.get(id=action.id).status == "queued"
    logged = hint_warnings()[before:]
    assert len(logged) == 1 and "apps.core.tasks.queued_action_run" in logged[0][0] and not logged[0][1]
    assert f"[{action.id}]" in logged[0][0]


def test_an_enqueue_against_an_unreachable_broker_fails_fast(settings, hint_warnings):
    """A broker that accepts connections and never answers costs the hints' read timeout, not the client's
    default (5 s, or forever with older redis-py); a refused connection fails at once. Neither raises."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    accepted = []

    def accept():
        try:
            while True:
                accepted.append(silent.accept())  # and never answer
        except OSError:
            pass

    threading.Thread(target=accept, daemon=True).start()
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
    hints._redis = None
    try:
        began = time.monotonic()
        with transaction.atomic():
            hints.hint_on_commit(RUNS_EXECUTE, [[3]], queue="normal")
        waited = time.monotonic() - began
    finally:
        hints._redis = None
        silent.close()
    assert waited < 3.0, waited

    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"
    began = time.monotonic()
    with transaction.atomic():
        hints.hint_on_commit(RUNS_EXECUTE, [[1, 2]], queue="normal")
    assert time.monotonic() - began < 0.5
    assert [m for m, _ in hint_warnings()] == [
        f"Could not send 1 hint ({RUNS_EXECUTE} to normal, ids [3]): TimeoutError: Timeout reading from socket. "
        "Left for the reconciler.",
        f"Could not send 1 hint ({RUNS_EXECUTE} to normal, ids [1, 2]): ConnectionError: Error 111 connecting to "
        f"{settings.CELERY_BROKER_URL[len('redis://') : -2]}. Connection refused. Left for the reconciler.",
    ]


def test_hint_many_now_says_whether_the_broker_took_the_hints(settings, test_redis, hint_warnings):
    many = [(RUNS_EXECUTE, [list(range(i * 100, i * 100 + 100))], "low") for i in range(3)]
    assert hints.hint_many_now(many) is True and test_redis.llen("low") == 3 and not hint_warnings()
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"
    assert hints.hint_many_now(many) is False
    [(text, traceback)] = hint_warnings()
    # One line for the whole send, naming the first ids only.
    assert text.startswith(f"Could not send 3 hints ({RUNS_EXECUTE} to low, ids [0, 1, 2,") and not traceback
    assert "19] and 280 more): ConnectionError" in text


# --- (c) a batch of request starts with the broker down: every request starts, none is aborted --------


def test_a_batch_of_request_starts_with_the_broker_down_starts_every_request(
    product, broker_down, hint_warnings, monkeypatch
):
    from apps.deliveries.models import Delivery, DeliveryStatus

    monkeypatch.setattr("apps.runs.triggers.api.RUN_BATCH", 30)  # the task executes 30 runs, hints the rest
    factories.make_workflow(product, key="w", steps=[factories.email_step()])
    ids = [_request(product, recipients=12) for _ in range(3)] + [_request(product, recipients=2)]
    assert requests_dispatch() == 4  # the dispatcher's pass: claimed, hints failed, no exception
    run_ids = requests_start(request_ids=ids)  # the task a worker runs on that hint, Redis gone meanwhile

    assert TriggerRequest.objects.filter(id__in=ids, status=RequestStatus.STARTED).count() == 4
    # Executed by the task, their emails sent by it (no broker needed)...
    assert Run.objects.filter(id__in=run_ids[:30], status=RunStatus.COMPLETED).count() == 30 and len(mail.outbox) == 30
    assert Delivery.objects.filter(status=DeliveryStatus.SENT).count() == 30
    # ...the others queued, their hint left for the reconciler.
    assert Run.objects.filter(id__in=run_ids[30:], status=RunStatus.QUEUED).count() == 8
    logged = hint_warnings()
    assert not any(traceback for _, traceback in logged), logged
    text = " ".join(m for m, _ in logged)
    assert sum(REQUESTS_START in m for m, _ in logged) == 1 and sum(RUNS_EXECUTE in m for m, _ in logged) == 1
    assert all(i in text for i in ids) and all(str(i) in text for i in run_ids[30:])


# --- (d) once the broker is back, the reconciler sends the hints and the work completes -------------


def test_after_the_broker_is_back_the_reconciler_hints_the_lost_work_and_it_completes(
    product, settings, test_redis, hinted, hint_warnings, monkeypatch, fan_out
):
    from apps.deliveries.models import Delivery, DeliveryStatus
    from apps.deliveries.services import deliveries_dispatch_due

    monkeypatch.setattr("apps.runs.triggers.api.REQUESTS_PER_TASK", 1)  # a task starts its own request only

    factories.make_workflow(product, key="w", steps=[factories.email_step()])
    started = _request(product, recipients=12)
    waiting = _request(product, recipients=3)
    reachable = settings.CELERY_BROKER_URL

    # Redis goes away: the dispatcher claims both requests, a worker starts one (its 12 runs are hinted
    # after commit), a reconcile tick runs; every hint is lost, nothing raises.
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"
    hints._redis = None
    try:
        assert requests_dispatch() == 2
        requests_start(request_ids=[started])
        settings.ROWBELL_REQUEUE_AFTER_SECONDS = 0
        runs_reconcile()
    finally:
        hints._redis = None
    assert len(hint_warnings()) >= 3
    assert Run.objects.filter(request_id=started, status=RunStatus.QUEUED).count() == 12
    assert TriggerRequest.objects.get(id=waiting).status == RequestStatus.ACCEPTED
    assert not mail.outbox

    # Redis is back: the next tick hints what the database shows nobody picked up, and workers do it.
    settings.CELERY_BROKER_URL = reachable
    runs_reconcile()
    deliveries_dispatch_due()
    assert {name for name, _ in hinted.pending()} == {REQUESTS_START, RUNS_EXECUTE}
    for _ in range(5):
        if not hinted.run():
            break
        runs_reconcile()
        deliveries_dispatch_due()
    assert Run.objects.filter(status=RunStatus.COMPLETED).count() == 15
    assert not Delivery.objects.exclude(status=DeliveryStatus.SENT).exists()
    assert sorted(m.to[0] for m in mail.outbox) == sorted(
        [f"u{i}@example.com" for i in range(12)] + [f"u{i}@example.com" for i in range(3)]
    )
