"""The durable engine: waits, branches, batches, retries, escalation, re-run and cancel, version pinning.

Time is moved by rewriting `resume_at` (what a beat tick compares with the clock), never by sleeping.
"""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from apps.audit.models import AuditEvent
from apps.deliveries.models import Delivery, DeliveryStatus
from apps.deliveries.services import deliveries_send
from apps.runs.engine import runs_resume_due
from apps.runs.escalation import escalations_send
from apps.runs.models import Batch, Escalation, Run, RunStatus, RunStep
from apps.runs.services import request_start, runs_execute, runs_reconcile, trigger_create
from tests import factories
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def _start(product, key="w", recipients=None, data=None):
    request_id, _ = trigger_create(
        tenant=factories.tenant_of(product),
        workflow=key,
        recipients=recipients or [{"id": "u1", "email": "u1@example.com"}],
        data=data if data is not None else {},
        priority="normal",
    )
    request_start(request_id=request_id)
    return Run.objects.filter(request_id=request_id).order_by("recipient_index")


def _state(run):
    run.refresh_from_db()
    return run.status, run.waiting_on


def _time_passes(run):
    """The moment the run waits for has come; a beat tick resumes it and a worker executes it."""
    Run.objects.filter(id=run.id).update(resume_at=timezone.now() - timedelta(seconds=1))
    assert runs_resume_due() == 1
    runs_execute(run_ids=[run.id])


def _send_all():
    deliveries_send(
        delivery_ids=list(Delivery.objects.filter(status=DeliveryStatus.QUEUED).values_list("id", flat=True))
    )


def _steps(run):
    return list(RunStep.objects.filter(run=run).order_by("id").values_list("step_id", "status"))


def test_a_wait_is_durable_and_resumed_once_by_the_beat_tick(product):
    factories.make_workflow(
        product,
        key="w",
        steps=[{"id": "pause", "type": "wait", "duration": "2h"}, factories.email_step(subject="s", body="b")],
    )
    run = _start(product).get()
    assert _state(run) == (RunStatus.WAITING, "time")
    assert timedelta(hours=1, minutes=59) < run.resume_at - timezone.now() <= timedelta(hours=2)
    assert runs_resume_due() == 0 and not Delivery.objects.exists()  # not yet

    Run.objects.filter(id=run.id).update(resume_at=timezone.now())
    assert runs_resume_due() == 1
    assert runs_resume_due() == 0  # a second tick finds nothing: the first one claimed it
    runs_execute(run_ids=[run.id])
    _send_all()
    assert _state(run) == (RunStatus.COMPLETED, "")
    assert len(mail.outbox) == 1 and _steps(run) == [("pause", "completed"), ("mail", "completed")]


def test_wait_until_a_timestamp_in_the_data_with_an_offset(product):
    factories.make_workflow(
        product,
        key="w",
        steps=[
            {"id": "remind", "type": "wait", "until": "data.appointment_at", "offset": "-1h"},
            factories.email_step(subject="s", body="b"),
        ],
    )
    at = timezone.now() + timedelta(days=2)
    run = _start(product, data={"appointment_at": at.isoformat()}).get()
    run.refresh_from_db()
    assert run.status == RunStatus.WAITING and abs(run.resume_at - (at - timedelta(hours=1))) < timedelta(seconds=1)

    past = _start(product, data={"appointment_at": "2020-01-01T00:00:00Z"}).get()
    assert _state(past) == (RunStatus.COMPLETED, "")  # nothing to wait for: straight to the email, sent
    assert len(mail.outbox) == 1

    bad = _start(product, data={"appointment_at": "next tuesday"}).get()
    bad.refresh_from_db()
    assert bad.status == RunStatus.FAILED and "data.appointment_at is not a timestamp" in bad.error


def test_wait_until_a_condition_or_its_timeout(product):
    factories.make_workflow(
        product,
        key="w",
        steps=[
            {
                "id": "paid",
                "type": "wait",
                "condition": {"column": "data.paid", "op": "eq", "value": True},
                "timeout": "1d",
                "every": "10m",
            },
            {
                "type": "branch",
                "branches": [
                    {
                        "when": {"column": "steps.paid.timed_out", "op": "eq", "value": True},
                        "steps": [factories.email_step("late", subject="late", body="b")],
                    }
                ],
                "otherwise": [factories.email_step("thanks", subject="thanks", body="b")],
            },
        ],
    )
    holds = _start(product, data={"paid": True}).get()
    assert _steps(holds)[0] == ("paid", "completed")

    run = _start(product, data={"paid": False}).get()
    run.refresh_from_db()
    assert (run.status, run.waiting_on) == (RunStatus.WAITING, "condition")
    assert timedelta(minutes=9) < run.resume_at - timezone.now() <= timedelta(minutes=10)
    _time_passes(run)  # checked again: still false, not timed out yet
    assert _state(run) == (RunStatus.WAITING, "condition") and _steps(run) == []
    run.refresh_from_db()
    run.state["deadlines"]["paid"] = (timezone.now() - timedelta(seconds=1)).isoformat()
    Run.objects.filter(id=run.id).update(state=run.state)
    _time_passes(run)
    assert RunStep.objects.get(run=run, step_id="paid").output == {"timed_out": True}
    assert Delivery.objects.get(run=run).payload["subject"] == "late"


def test_branches_take_the_first_condition_that_holds_or_otherwise(product):
    factories.make_workflow(
        product,
        key="w",
        steps=[
            {
                "id": "route",
                "type": "branch",
                "branches": [
                    {
                        "when": {"column": "data.total", "op": "gte", "value": 100},
                        "steps": [factories.email_step("big", subject="big", body="b")],
                    },
                    {
                        "when": {
                            "or": [
                                {"column": "data.plan", "op": "in", "value": ["pro", "team"]},
                                {"column": "recipient.vip", "op": "eq", "value": True},
                            ]
                        },
                        "steps": [factories.email_step("pro", subject="pro", body="b")],
                    },
                ],
                "otherwise": [factories.email_step("plain", subject="plain", body="b")],
            },
            factories.email_step("after", subject="after", body="b"),
        ],
    )
    cases = {"big": {"total": 250, "plan": "pro"}, "pro": {"total": 5, "plan": "team"}, "plain": {"total": "5"}}
    for expected, data in cases.items():
        run = _start(product, data=data).get()
        _send_all()
        runs_execute(run_ids=[run.id])
        _send_all()
        assert [s for s, _ in _steps(run)] == ["route", expected, "after"], data
        assert _state(run) == (RunStatus.COMPLETED, "")


def test_a_batch_collects_runs_of_a_key_and_continues_once(product, receiver):
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(
        product,
        key="w",
        steps=[
            {"id": "digest", "type": "batch", "key": "data.customer", "window": "10m"},
            {"id": "hook", "type": "notify", "channel": "webhook", "webhook": str(endpoint.id)},
        ],
    )
    first = _start(product, data={"customer": 7, "n": 1}).get()
    others = [_start(product, data={"customer": 7, "n": n}).get() for n in (2, 3)]
    lone = _start(product, data={"customer": 8, "n": 4}).get()
    assert _state(first) == (RunStatus.WAITING, "batch") and _state(lone) == (RunStatus.WAITING, "batch")
    for run in others:  # they ended at the batch step: their owner carries their items
        assert _state(run) == (RunStatus.COMPLETED, "")
        assert RunStep.objects.get(run=run).output["batched_into"] == first.id

    _time_passes(first)
    _send_all()
    body = Webhook(endpoint.secret).verify(receiver.requests[0]["body"], receiver.requests[0]["headers"])
    assert body["data"]["step"] == "hook"
    batch = Batch.objects.get(owner=first)
    assert batch.status == "closed" and batch.size == 3
    first.refresh_from_db()
    assert [i["data"]["n"] for i in first.state["batch"]["items"]] == [1, 2, 3]
    assert _state(first) == (RunStatus.COMPLETED, "")

    late = _start(product, data={"customer": 7, "n": 5}).get()  # the window closed: a new batch
    assert _state(late) == (RunStatus.WAITING, "batch")


def test_batch_items_are_in_the_templates(product):
    factories.make_workflow(
        product,
        key="w",
        steps=[
            {"id": "digest", "type": "batch", "key": "recipient.id", "window": "1h"},
            factories.email_step(
                subject="{{ batch.count }} updates", body="{% for i in batch['items'] %}{{ i.data.what }};{% endfor %}"
            ),
        ],
    )
    runs = [_start(product, data={"what": w}).get() for w in ("a", "b")]
    _time_passes(runs[0])
    _send_all()
    assert mail.outbox[0].subject == "2 updates" and mail.outbox[0].body == "a;b;"


def test_the_retry_policy_is_the_workflows(product, receiver):
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(
        product,
        key="w",
        steps=[factories.webhook_step(endpoint)],
        retry={"max_attempts": 3, "backoff": "1m", "max_backoff": "90s"},
    )
    receiver.default = (503, {}, b"busy")
    before = timezone.now()
    run = _start(product).get()  # its task makes the first attempt
    delivery = Delivery.objects.get(run=run)
    assert (delivery.max_attempts, delivery.backoff_seconds, delivery.max_backoff_seconds) == (3, 60, 90)
    delays = [(delivery.next_attempt_at - before).total_seconds()]
    for _ in range(2):
        Delivery.objects.filter(id=delivery.id).update(next_attempt_at=timezone.now())
        before = timezone.now()
        deliveries_send(delivery_ids=[delivery.id])
        delivery.refresh_from_db()
        if delivery.status == DeliveryStatus.QUEUED:
            delays.append((delivery.next_attempt_at - before).total_seconds())
    assert 30 <= delays[0] <= 61 and 45 <= delays[1] <= 91  # exponential with jitter, capped at 90 s
    assert _state(run) == (RunStatus.FAILED, "")


def test_a_failed_run_is_escalated_once_and_operators_are_not_flooded(product, receiver, settings):
    settings.ADMINS = [("Ops", "ops@example.com")]
    hooks = factories.make_endpoint(product, receiver.url())
    from apps.tenants.services import product_settings_update

    product_settings_update(product=product, escalation_webhook=hooks.id, actor="test")
    factories.make_workflow(product, key="w", steps=[factories.email_step(subject="Hi {{ data.missing }}")])
    first = _start(product).get()
    assert _state(first) == (RunStatus.FAILED, "")
    assert escalations_send() == 1
    assert len(mail.outbox) == 1 and "1 failed run in Acme" in mail.outbox[0].subject
    assert (
        f"run {first.id}, workflow w v1" in mail.outbox[0].body and "Missing variable 'missing'" in mail.outbox[0].body
    )
    _send_all()
    body = Webhook(hooks.secret).verify(receiver.requests[0]["body"], receiver.requests[0]["headers"])
    assert body["type"] == "runs.failed" and body["data"]["failures"][0]["run_id"] == first.id

    for _ in range(3):  # a broken workflow keeps failing: they wait for the next notice
        _start(product)
    assert escalations_send() == 0 and len(mail.outbox) == 1
    Escalation.objects.filter(run=first).update(notified_at=timezone.now() - timedelta(hours=1))
    assert escalations_send() == 3
    assert len(mail.outbox) == 2 and "3 failed runs" in mail.outbox[1].subject
    assert escalations_send() == 0  # each failure is told once
    assert AuditEvent.objects.filter(action="escalation.sent").count() == 2


def test_rerun_from_the_failed_step_keeps_what_came_before(product_with_key, receiver):
    product, key = product_with_key
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(
        product,
        key="w",
        steps=[factories.webhook_step(endpoint, "first"), factories.email_step("second", subject="{{ data.name }}")],
    )
    run = _start(product).get()
    _send_all()
    runs_execute(run_ids=[run.id])
    assert _state(run) == (RunStatus.FAILED, "")  # data.name is missing
    client = client_for(key)

    again = client.post(f"/api/v1/runs/{run.id}/rerun", {}, format="json")
    assert again.status_code == 201, again.json()
    new = Run.objects.get(id=again.json()["id"])
    assert new.rerun_of == run and again.json()["rerun_of"] == run.id
    runs_execute(run_ids=[new.id])
    assert _state(new) == (RunStatus.FAILED, "")
    assert [s for s, _ in _steps(new)] == ["second"]  # the webhook was not sent again
    assert len(receiver.requests) == 1

    whole = client.post(f"/api/v1/runs/{run.id}/rerun", {"start_from": "start"}, format="json").json()
    runs_execute(run_ids=[whole["id"]])
    assert [s for s, _ in _steps(Run.objects.get(id=whole["id"]))] == ["first"]
    assert AuditEvent.objects.filter(action="run.rerun", actor__startswith="key:").count() == 2

    refused = client.post(f"/api/v1/runs/{whole['id']}/rerun", {}, format="json")
    assert refused.status_code == 409 and "Only a failed or cancelled run" in refused.json()["error"]["message"]
    bad = client.post(f"/api/v1/runs/{run.id}/rerun", {"start_from": "middle"}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["fields"][0]["field"] == "start_from"


def test_cancel_a_waiting_run_discards_its_pending_deliveries(product_with_key):
    product, key = product_with_key
    factories.make_workflow(
        product, key="w", steps=[{"type": "wait", "duration": "1d"}, factories.email_step(subject="s", body="b")]
    )
    run = _start(product).get()
    client = client_for(key)
    response = client.post(f"/api/v1/runs/{run.id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert runs_resume_due() == 0
    assert AuditEvent.objects.get(action="run.cancelled", target_id=str(run.id)).actor.startswith("key:")
    again = client.post(f"/api/v1/runs/{run.id}/cancel")
    assert again.status_code == 409

    from apps.workflows.models import Workflow

    Workflow.objects.filter(key="w").update(sandbox=True)  # its email will be held for review
    sending = _start(product, key="w").get()
    Run.objects.filter(id=sending.id).update(resume_at=timezone.now())
    runs_resume_due()
    runs_execute(run_ids=[sending.id])
    assert _state(sending) == (RunStatus.WAITING, "delivery")
    client.post(f"/api/v1/runs/{sending.id}/cancel")
    assert Delivery.objects.get(run=sending).status == DeliveryStatus.DISCARDED
    assert not mail.outbox


def test_unpublish_can_cancel_waiting_runs(product, product_client):
    factories.make_workflow(
        product, key="w", steps=[{"type": "wait", "duration": "1d"}, factories.email_step(subject="s", body="b")]
    )
    keep = _start(product).get()
    product_client.post("/api/v1/workflows/w/unpublish", {}, format="json")
    assert _state(keep) == (RunStatus.WAITING, "time")  # by default, started runs finish
    product_client.post("/api/v1/workflows/w/publish")
    stop = _start(product).get()
    product_client.post("/api/v1/workflows/w/unpublish", {"cancel_runs": True}, format="json")
    assert _state(stop)[0] == RunStatus.CANCELLED and _state(keep)[0] == RunStatus.CANCELLED


def test_a_lost_delivery_settlement_is_repaired_by_the_reconciler(product, receiver, settings):
    settings.ROWBELL_REQUEUE_AFTER_SECONDS = 0
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(product, key="w", steps=[factories.webhook_step(endpoint)])
    receiver.answer(503)  # its first attempt: to be retried, and the run waits
    run = _start(product).get()
    Delivery.objects.filter(run=run).update(status=DeliveryStatus.DELIVERED)  # finalized behind the run's back
    Run.objects.filter(id=run.id).update(updated_at=timezone.now() - timedelta(minutes=5))
    assert runs_reconcile()["runs_settled"] == 1
    assert _state(run) == (RunStatus.COMPLETED, "")


def test_admin_actions_rerun_and_cancel_name_the_staff_user(product, client):
    from django.contrib.auth import get_user_model

    factories.make_workflow(product, key="w", steps=[factories.email_step(subject="{{ data.missing }}")])
    failed = _start(product).get()
    factories.make_workflow(product, key="slow", steps=[{"type": "wait", "duration": "1d"}])
    waiting = _start(product, key="slow").get()
    client.force_login(get_user_model().objects.create_superuser("ops", "ops@example.com", "pw"))
    page = client.post(
        "/admin/runs/run/", {"action": "rerun_from_start", "_selected_action": [failed.id, waiting.id]}, follow=True
    ).content.decode()
    rerun = Run.objects.get(rerun_of=failed)
    assert f"Re-run: {failed.id} (new run {rerun.id})" in page
    assert f"Not re-run: {waiting.id}: Only a failed or cancelled run can be re-run" in page
    client.post("/admin/runs/run/", {"action": "cancel", "_selected_action": [waiting.id]}, follow=True)
    assert _state(waiting)[0] == RunStatus.CANCELLED
    assert AuditEvent.objects.get(action="run.cancelled", target_id=str(waiting.id)).actor == "staff:ops"
    assert AuditEvent.objects.get(action="run.rerun", target_id=str(rerun.id)).actor == "staff:ops"


def test_a_run_failing_in_a_batch_writes_nothing_half_way_and_the_others_go_on(product):
    factories.make_workflow(
        product,
        key="w",
        steps=[
            {
                "id": "route",
                "type": "branch",
                "branches": [
                    {
                        "when": {"column": "data.bad", "op": "eq", "value": True},
                        "steps": [factories.email_step("oops", subject="{{ data.missing }}")],
                    }
                ],
            },
            factories.email_step("fine", subject="ok", body="b"),
        ],
    )
    request_id, _ = trigger_create(
        tenant=factories.tenant_of(product),
        workflow="w",
        priority="normal",
        recipients=[{"id": f"u{i}", "email": f"u{i}@example.com"} for i in range(12)],
        data={"bad": True},
    )
    good_id, _ = trigger_create(
        tenant=factories.tenant_of(product),
        workflow="w",
        priority="normal",
        recipients=[{"id": "g", "email": "g@example.com"}],
        data={"bad": False},
    )
    ids = request_start(request_id=request_id) + request_start(request_id=good_id)
    runs_execute(run_ids=ids)
    bad = Run.objects.filter(request_id=request_id)
    assert {r.status for r in bad} == {RunStatus.FAILED}
    assert all(_steps(r) == [("oops", "failed")] for r in bad)  # its branch step was not left written
    _send_all()
    assert Run.objects.get(request_id=good_id).status == RunStatus.COMPLETED
    assert len(mail.outbox) == 1


def test_a_second_rerun_waits_for_the_first(product_with_key):
    product, key = product_with_key
    factories.make_workflow(product, key="w", steps=[factories.email_step(subject="{{ data.missing }}")])
    run = _start(product).get()
    client = client_for(key)
    assert client.post(f"/api/v1/runs/{run.id}/rerun", {}, format="json").status_code == 201
    again = client.post(f"/api/v1/runs/{run.id}/rerun", {}, format="json")
    assert again.status_code == 409 and "has not ended yet" in again.json()["error"]["message"]


def test_a_worker_whose_lease_expired_writes_nothing_once_another_claimed_the_run(product, monkeypatch):
    from django.db.models import F

    from apps.runs.services import run_execute
    from apps.runs.triggers import TRIGGER_SOURCES

    factories.make_workflow(
        product,
        key="w",
        steps=[{"id": "pause", "type": "wait", "duration": "1h"}, factories.email_step(subject="s", body="b")],
    )
    run = _start(product).get()
    Run.objects.filter(id=run.id).update(resume_at=timezone.now() - timedelta(seconds=1))
    assert runs_resume_due() == 1  # the wait is over: the run is queued
    api = TRIGGER_SOURCES["api"]
    load = api.load

    def stalled(runs):
        """Worker A has claimed the run and stalls past its lease; meanwhile the reconciler queues the run
        again and worker B claims it, as run_execute does, and is still at work."""
        load(runs)
        Run.objects.filter(id=run.id).update(lease_until=timezone.now() - timedelta(seconds=1))
        runs_reconcile()
        assert (
            Run.objects.filter(id=run.id, status=RunStatus.QUEUED).update(
                status=RunStatus.RUNNING, claim=F("claim") + 1, lease_until=timezone.now() + timedelta(minutes=2)
            )
            == 1
        )

    monkeypatch.setattr(api, "load", stalled)
    assert run_execute(run_id=run.id) is None  # A wakes up: its claim is gone, so it stops
    run.refresh_from_db()
    assert (run.status, run.step_index, run.claim) == (RunStatus.RUNNING, 1, 2)  # as B holds it
    assert _steps(run) == [("pause", "completed")] and not Delivery.objects.exists() and not mail.outbox
