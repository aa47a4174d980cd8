"""A notify step is skipped only when its recipient has no address for the channel. A template (the `to`
or any other field, on any channel) that names something else the run lacks fails the step: the run fails
and is escalated, and the error names the step, the field and the missing name.

The database-triggered case (a `to` of `{{ row.email }}` in a run without `row`) is in
tests/connections/test_workflow_runs.py, beside the customer database it needs.
"""

import pytest

from apps.deliveries.models import Delivery, DeliveryStatus
from apps.runs.engine import run_context
from apps.runs.models import Escalation, Run, RunStatus
from apps.runs.services import request_start, trigger_create
from apps.runs.steps import StepFailed
from apps.runs.steps.notify import notify_render
from tests import factories

pytestmark = pytest.mark.django_db


def _run(product, *, recipient, data=None) -> Run:
    request_id, _ = trigger_create(
        tenant=factories.tenant_of(product),
        workflow="w",
        recipients=[recipient],
        data=data if data is not None else {},
        priority="normal",
    )
    request_start(request_id=request_id)
    return Run.objects.get(request_id=request_id)


def _failed_and_escalated(run: Run) -> str:
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert Escalation.objects.filter(run=run, error=run.error[:2000]).exists()
    assert not Delivery.objects.filter(run=run, status=DeliveryStatus.SKIPPED).exists()
    return run.error


def test_a_recipient_without_an_email_address_is_still_skipped_and_the_run_completes(product):
    factories.make_workflow(product, key="w", steps=[factories.email_step(subject="Hi", body="b")])
    run = _run(product, recipient={"id": "u1", "name": "Ann"})
    delivery = Delivery.objects.get(run=run)
    assert delivery.status == DeliveryStatus.SKIPPED
    assert delivery.last_error == "The recipient has no email address (Missing variable 'email'.)."
    run.refresh_from_db()
    assert run.status == RunStatus.COMPLETED and not Escalation.objects.filter(run=run).exists()


def test_a_to_naming_a_property_the_recipient_lacks_below_the_top_is_skipped(product):
    factories.make_workflow(
        product, key="w", steps=[factories.email_step(to="{{ recipient.contact.email }}", subject="s", body="b")]
    )
    run = _run(product, recipient={"id": "u1", "contact": {"phone": "+14155550123"}})
    assert Delivery.objects.get(run=run).status == DeliveryStatus.SKIPPED
    run.refresh_from_db()
    assert run.status == RunStatus.COMPLETED


def test_a_missing_key_of_data_in_an_email_subject_fails_the_step_naming_it(product):
    factories.make_workflow(product, key="w", steps=[factories.email_step(subject="Order {{ data.order }}", body="b")])
    run = _run(product, recipient={"id": "u1", "email": "ann@example.com"}, data={"total": 3})
    assert _failed_and_escalated(run) == "Step 'mail', field 'subject': Missing variable 'order' (data.order)."
    assert not Delivery.objects.filter(run=run).exists()


@pytest.mark.parametrize(
    ("step", "missing"),
    [
        (factories.email_step(to="{{ data.email }}", subject="s", body="b"), "email"),
        ({"id": "mail", "type": "notify", "channel": "sms", "to": "{{ data.phone }}", "text": "t"}, "phone"),
        (
            {"id": "mail", "type": "notify", "channel": "push", "to": "{{ data.token }}", "title": "t", "body": "b"},
            "token",
        ),
    ],
)
def test_a_to_naming_something_the_run_lacks_outside_the_recipient_fails_the_step(product, step, missing):
    factories.make_workflow(product, key="w", steps=[step])
    run = _run(product, recipient={"id": "u1", "email": "a@example.com", "phone": "+14155550123"})
    assert _failed_and_escalated(run) == f"Step 'mail', field 'to': Missing variable '{missing}' (data.{missing})."
    assert not Delivery.objects.filter(run=run).exists()


def test_a_to_the_sandbox_refuses_fails_the_step_instead_of_skipping_the_recipient(product):
    factories.make_workflow(
        product, key="w", steps=[factories.email_step(to="{{ recipient.__class__ }}", subject="s", body="b")]
    )
    run = _run(product, recipient={"id": "u1", "email": "a@example.com"})
    assert _failed_and_escalated(run).startswith("Step 'mail', field 'to': Template refused by the sandbox")


def test_a_webhook_payload_naming_a_variable_the_run_lacks_fails_the_step(product, receiver):
    # A webhook step has no templates: its payload reads the run's context itself. A context without a
    # variable the payload names fails the step naming it (it was a KeyError: "Internal error").
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(product, key="w", steps=[factories.webhook_step(endpoint)])
    run = _run(product, recipient={"id": "u1"})
    step = factories.webhook_step(endpoint)
    context = run_context(run)
    del context["data"]
    with pytest.raises(StepFailed) as failed:
        notify_render(run=run, step=step, context=context)
    assert str(failed.value) == "Step 'hook': Missing variable 'data'."
