from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.deliveries.models import Delivery, DeliveryStatus
from apps.deliveries.services import deliveries_send
from apps.runs.models import RequestStatus, Run, RunStatus, RunStep, TriggerRequest
from apps.runs.services import request_start, run_execute, runs_execute, runs_reconcile, trigger_create
from tests import factories
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def _trigger(product, key="w", recipients=None, data=None, organization=None):
    request_id, _ = trigger_create(
        tenant=factories.tenant_of(product, organization),
        workflow=key,
        recipients=recipients or [{"id": "u1"}],
        data=data if data is not None else {"order": 7},
        priority="normal",
    )
    request = TriggerRequest.objects.get(id=request_id)
    return request


def test_email_step_renders_templates_and_sends(product):
    factories.make_workflow(product, key="w", steps=[factories.email_step(html="<b>{{ data.note }}</b>")])
    request = _trigger(
        product,
        recipients=[{"id": "u1", "email": "ann@example.com", "name": "Ann"}],
        data={"order": 7, "note": "<script>"},
    )
    request_start(request_id=request.id)
    delivery = Delivery.objects.get(request=request)
    deliveries_send(delivery_ids=[delivery.id])
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["ann@example.com"] and message.subject == "Hello Ann" and message.body == "Order 7"
    assert message.alternatives[0][0] == "<b>&lt;script&gt;</b>"  # HTML bodies escape values
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SENT


def test_recipient_without_email_is_skipped_with_the_reason(product):
    factories.make_workflow(product, key="w", steps=[factories.email_step(subject="s", body="b")])
    request = _trigger(product, recipients=[{"id": "u1"}])
    request_start(request_id=request.id)
    delivery = Delivery.objects.get(request=request)
    assert delivery.status == DeliveryStatus.SKIPPED
    assert delivery.last_error == "The recipient has no email address (Missing variable 'email'.)."


def test_missing_template_variable_fails_the_run_naming_the_variable(product):
    factories.make_workflow(product, key="w", steps=[factories.email_step(subject="Hi {{ data.customer }}")])
    request = _trigger(product, recipients=[{"id": "u1", "email": "a@example.com"}])
    request_start(request_id=request.id)
    run = Run.objects.get(request=request)
    assert run.status == RunStatus.FAILED
    assert "Missing variable 'customer'" in run.error
    assert not Delivery.objects.filter(request=request).exists()
    assert AuditEvent.objects.filter(action="run.failed", target_id=str(run.id)).exists()


@pytest.mark.parametrize(
    "template",
    [
        "{{ data.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ lipsum.__globals__['os'].popen('id').read() }}",
        "{{ self.__init__.__globals__.__builtins__.open('/etc/passwd').read() }}",
        "{% include '/etc/passwd' %}",
        "{% import 'os' as os %}{{ os }}",
        "{{ range.__self__ }}",
    ],
)
def test_templates_cannot_reach_python_internals(product, template):
    factories.make_workflow(product, key="w", steps=[factories.email_step(subject=template)])
    request = _trigger(product, recipients=[{"id": "u1", "email": "a@example.com"}])
    request_start(request_id=request.id)
    run = Run.objects.get(request=request)
    assert run.status == RunStatus.FAILED and not mail.outbox
    assert "root:" not in run.error and "uid=" not in run.error  # nothing leaked into the error either


def test_steps_run_in_order_and_each_is_recorded(product, receiver):
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(product, key="w", steps=[factories.webhook_step(endpoint, "a"), factories.email_step("b")])
    request = _trigger(product, recipients=[{"id": "u1", "email": "a@example.com", "name": "A"}])
    request_start(request_id=request.id)
    run = Run.objects.get(request=request)
    # A notify step waits for its delivery, which the task that wrote it sends at once: the next step
    # starts once the webhook was delivered, in the next task.
    assert Delivery.objects.get(run=run, step_id="a").status == DeliveryStatus.DELIVERED and len(receiver.requests) == 1
    assert (run.status, run.step_index) == (RunStatus.QUEUED, 1) and not mail.outbox
    runs_execute(run_ids=[run.id])
    run.refresh_from_db()
    assert run.status == RunStatus.COMPLETED and run.step_index == 2  # the last delivery completed it
    assert len(mail.outbox) == 1
    assert list(RunStep.objects.filter(run=run).values_list("step_id", "status")) == [
        ("a", "completed"),
        ("b", "completed"),
    ]
    assert list(Delivery.objects.filter(run=run).order_by("id").values_list("channel", flat=True)) == [
        "webhook",
        "email",
    ]


def test_starting_a_request_twice_creates_its_runs_once(product):
    factories.make_workflow(product, key="w", steps=[factories.email_step(subject="s", body="b")])
    request = _trigger(product, recipients=[{"id": "a"}, {"id": "b"}])
    assert len(request_start(request_id=request.id)) == 2
    assert request_start(request_id=request.id) == []
    assert Run.objects.filter(request=request).count() == 2
    assert run_execute(run_id=Run.objects.filter(request=request).first().id) is None  # already done


def test_runs_keep_the_version_they_started_with(product, product_client):
    factories.make_workflow(product, key="w", steps=[factories.email_step(subject="v1 {{ recipient.id }}")])
    request = _trigger(product, recipients=[{"id": "u", "email": "u@example.com"}])
    product_client.put("/api/v1/workflows/w", {"steps": [factories.email_step(subject="v2")]}, format="json")
    product_client.post("/api/v1/workflows/w/publish")
    request_start(request_id=request.id)
    assert Delivery.objects.get(request=request).payload["subject"] == "v1 u"
    newer = _trigger(product, recipients=[{"id": "u", "email": "u@example.com"}])
    request_start(request_id=newer.id)
    assert Delivery.objects.get(request=newer).payload["subject"] == "v2"


def test_reconcile_requeues_lost_requests_and_runs_and_dead_leases(product, settings):
    factories.make_workflow(product, key="w", steps=[factories.email_step(subject="s", body="b")])
    old = timezone.now() - timedelta(minutes=10)
    lost = _trigger(product)
    TriggerRequest.objects.filter(id=lost.id).update(enqueued_at=old)
    _trigger(product, recipients=[{"id": "never-dispatched"}])
    started = _trigger(product, recipients=[{"id": "x"}])
    TriggerRequest.objects.filter(id=started.id).update(status=RequestStatus.STARTED)
    dead = Run.objects.create(
        source="api",
        cause_id=str(started.id),
        request=started,
        recipient_index=0,
        product=product,
        workflow_version_id=started.workflow_version_id,
        recipient={"id": "x"},
        status=RunStatus.RUNNING,
        lease_until=timezone.now() - timedelta(seconds=1),
    )
    result = runs_reconcile()
    assert result == {"requests": 1, "runs_requeued": 1, "runs": 1, "dispatched": 1, "runs_settled": 0}
    dead.refresh_from_db()
    assert dead.status == RunStatus.QUEUED
    # A second pass right away finds nothing new to hint.
    assert runs_reconcile() == {"requests": 0, "runs_requeued": 0, "runs": 0, "dispatched": 0, "runs_settled": 0}
    runs_execute(run_ids=[dead.id])
    dead.refresh_from_db()
    assert dead.status == RunStatus.COMPLETED  # its email was skipped: no address


def test_request_status_shows_each_delivery_and_the_overall_state(product_with_key, receiver):
    product, key = product_with_key
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(product, key="w", steps=[factories.webhook_step(endpoint)])
    request = _trigger(product, recipients=[{"id": "a"}, {"id": "b"}])
    client = client_for(key)
    assert client.get(f"/api/v1/requests/{request.id}").json()["status"] == "accepted"
    receiver.answer(200, 500)  # the second one is retried later
    request_start(request_id=request.id)
    body = client.get(f"/api/v1/requests/{request.id}").json()
    assert body["status"] == "processing" and len(body["deliveries"]) == 2
    receiver.answer(410)
    retried = Delivery.objects.filter(request=request, status=DeliveryStatus.QUEUED)
    retried.update(next_attempt_at=timezone.now())
    deliveries_send(delivery_ids=list(retried.values_list("id", flat=True)))
    body = client.get(f"/api/v1/requests/{request.id}").json()
    assert body["status"] == "partially_failed"
    assert sorted((d["channel"], d["status"], d["attempts"]) for d in body["deliveries"]) == [
        ("webhook", "delivered", 1),
        ("webhook", "failed", 2),
    ]


def test_a_step_that_renders_a_nul_character_fails_the_run_once(product):
    factories.make_workflow(product, key="w", steps=[factories.email_step(subject='Hi{{ "\\x00" }}')])
    request = _trigger(product, recipients=[{"id": "u1", "email": "a@example.com"}])
    request_start(request_id=request.id)
    run = Run.objects.get(request=request)
    assert run.status == RunStatus.FAILED and "NUL character" in run.error


def test_an_unexpected_step_error_fails_the_run_instead_of_retrying_forever(product, monkeypatch):
    from apps.runs.steps import STEP_TYPES, StepType

    factories.make_workflow(product, key="w", steps=[factories.email_step(subject="s", body="b")])

    class Broken(StepType):
        name, batchable = "notify", True

        def execute(self, call):
            raise ValueError("cannot work")

    monkeypatch.setitem(STEP_TYPES, "notify", Broken())
    request = _trigger(product, recipients=[{"id": "u1", "email": "a@example.com"}])
    request_start(request_id=request.id)
    run = Run.objects.get(request=request)
    assert run.status == RunStatus.FAILED and run.error == "Internal error: ValueError: cannot work"
    assert runs_reconcile()["runs_requeued"] == 0


def test_a_task_also_takes_other_hinted_requests_that_wait_up_to_its_limit(product, monkeypatch):
    monkeypatch.setattr("apps.runs.triggers.api.REQUESTS_PER_TASK", 3)
    factories.make_workflow(product, key="w", steps=[factories.email_step(subject="s", body="b")])
    hinted = [_trigger(product, recipients=[{"id": f"h{i}"}]) for i in range(4)]
    TriggerRequest.objects.filter(id__in=[r.id for r in hinted]).update(enqueued_at=timezone.now())
    not_hinted = _trigger(product, recipients=[{"id": "x"}])  # the dispatcher has not seen it yet
    assert len(request_start(request_id=hinted[3].id)) == 3
    started = set(TriggerRequest.objects.filter(status=RequestStatus.STARTED).values_list("id", flat=True))
    # Its own request, then the oldest others that wait; no more than its limit.
    assert started == {hinted[3].id, hinted[0].id, hinted[1].id} and not_hinted.id not in started
    assert request_start(request_id=hinted[3].id) == [Run.objects.get(request=hinted[2]).id]  # a later hint


def test_a_write_the_database_refuses_fails_only_the_run_that_made_it(product, monkeypatch):
    from apps.deliveries.channels import Rendered
    from apps.deliveries.services import delivery_build
    from apps.runs.steps import STEP_TYPES, StepOutcome, StepType

    factories.make_workflow(product, key="w", steps=[factories.email_step(subject="s", body="b")])
    notify = STEP_TYPES["notify"]

    class Unstorable(StepType):
        """A step whose delivery PostgreSQL refuses to store (a NUL character in its payload)."""

        name, batchable = "notify", True

        def execute(self, call):
            if call.run.recipient["id"] != "bad":
                return notify.execute(call)
            call.deliver(
                *delivery_build(
                    channel="email",
                    rendered=Rendered(target="x", payload={"text": "a\x00b"}),
                    run=call.run,
                    step_id=call.step["id"],
                )
            )
            return StepOutcome(waiting_on="delivery")

    monkeypatch.setitem(STEP_TYPES, "notify", Unstorable())
    request = _trigger(product, recipients=[{"id": "good", "email": "g@example.com"}, {"id": "bad"}])
    # The batch that starts the request cannot be written: its runs are written queued instead...
    run_ids = request_start(request_id=request.id)
    assert set(Run.objects.filter(id__in=run_ids).values_list("status", flat=True)) == {RunStatus.QUEUED}
    # ...and a batch of them that cannot be written is executed one run at a time.
    runs_execute(run_ids=run_ids)
    good, bad = Run.objects.get(recipient__id="good"), Run.objects.get(recipient__id="bad")
    assert good.status == RunStatus.COMPLETED and len(mail.outbox) == 1
    assert bad.status == RunStatus.FAILED and bad.error.startswith("Internal error: DataError")
