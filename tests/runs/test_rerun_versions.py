"""Re-running a failed run on the version it ran (the default) or on the version published since (a fix), and
saying which one everywhere: the API's answer, the admin's message, the audit row and the new run's page."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core import mail
from django.urls import reverse

from apps.audit.models import AuditEvent
from apps.dashboard.groups import OPERATORS
from apps.deliveries.models import Delivery, DeliveryStatus
from apps.deliveries.services import deliveries_send
from apps.runs.models import Run, RunStatus, RunStep
from apps.runs.services import request_start, runs_execute, trigger_create
from apps.workflows.models import Workflow
from apps.workflows.services import workflow_publish, workflow_unpublish, workflow_update
from tests import factories
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def _start(product) -> Run:
    request_id, _ = trigger_create(
        tenant=factories.tenant_of(product),
        workflow="w",
        recipients=[{"id": "u1", "email": "u1@example.com"}],
        data={},
        priority="normal",
    )
    request_start(request_id=request_id)
    return Run.objects.get(request_id=request_id)


def _send_all():
    deliveries_send(
        delivery_ids=list(Delivery.objects.filter(status=DeliveryStatus.QUEUED).values_list("id", flat=True))
    )


def _run(run_id: int) -> Run:
    """A re-run executed as a worker would, then re-read."""
    runs_execute(run_ids=[run_id])
    _send_all()
    runs_execute(run_ids=[run_id])
    return Run.objects.select_related("workflow_version").get(id=run_id)


def _publish(product, endpoint, greeting: dict) -> int:
    workflow = Workflow.objects.get(product=product, key="w")
    workflow_update(
        workflow=workflow,
        definition={"trigger": {"type": "api"}, "steps": [factories.webhook_step(endpoint, "first"), greeting]},
        actor="test",
    )
    return workflow_publish(workflow=workflow, actor="test").version


@pytest.fixture
def broken(product_with_key, receiver):
    """Two runs that failed on v1 at their second step (it names data the trigger does not send), after their
    first step was sent; then v2 is published, which fixes that step."""
    product, key = product_with_key
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(
        product,
        key="w",
        steps=[factories.webhook_step(endpoint, "first"), factories.email_step("second", subject="{{ data.name }}")],
    )
    runs = [_start(product), _start(product)]
    for run in runs:
        assert _run(run.id).status == RunStatus.FAILED
    assert len(receiver.requests) == 2
    assert _publish(product, endpoint, factories.email_step("second", subject="Hello", body="Hi")) == 2
    return product, key, endpoint, runs


def test_a_rerun_uses_the_run_s_version_unless_the_latest_is_asked_for(broken, receiver):
    product, key, _, (run, _) = broken
    client = client_for(key)

    again = client.post(f"/api/v1/runs/{run.id}/rerun", {}, format="json")
    assert again.status_code == 201 and again.json()["version"] == 1  # the default: the run's version, said
    assert _run(again.json()["id"]).status == RunStatus.FAILED  # ... which has the bug still
    audit = AuditEvent.objects.get(action="run.rerun", target_id=str(again.json()["id"]))
    assert (audit.data["version"], audit.data["on"], audit.data["rerun_of_version"]) == (1, "the run's version", 1)

    fixed = client.post(f"/api/v1/runs/{run.id}/rerun", {"version": "latest"}, format="json")
    assert fixed.status_code == 201 and fixed.json()["version"] == 2
    new = _run(fixed.json()["id"])
    assert new.status == RunStatus.COMPLETED and new.workflow_version.version == 2
    assert mail.outbox[-1].subject == "Hello"
    assert len(receiver.requests) == 2  # from the failed step: the webhook step before it was not sent again
    assert list(RunStep.objects.filter(run=new).values_list("step_id", flat=True)) == ["second"]
    audit = AuditEvent.objects.get(action="run.rerun", target_id=str(new.id))
    assert (audit.data["version"], audit.data["on"], audit.data["rerun_of_version"]) == (2, "the latest published", 1)

    # Its messages were sent: a further re-run, on either version, would send them again.
    for body in ({}, {"version": "latest"}):
        twice = client.post(f"/api/v1/runs/{run.id}/rerun", body, format="json")
        assert twice.status_code == 409
        assert twice.json()["error"]["message"] == (
            f"Run {new.id}, a re-run of this one, completed: its messages were sent, and another re-run would send "
            "them again."
        )
    assert len(receiver.requests) == 2 and Run.objects.filter(rerun_of=run).count() == 2

    bad = client.post(f"/api/v1/runs/{run.id}/rerun", {"version": "newest"}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["fields"][0]["field"] == "version"


def test_an_operator_chooses_the_version_on_the_run_s_page_and_the_new_run_says_which(broken, client):
    _, _, _, (_, run) = broken
    operator = get_user_model().objects.create_user("op", "op@example.com", "pw", is_staff=True)
    operator.groups.add(Group.objects.get(name=OPERATORS))
    client.force_login(operator)
    url = reverse("admin:runs_run_change", args=[run.id])
    page = client.get(url).content.decode()
    for action, label in (
        ("rerun_from_failed_step", "Re-run from the failed step on v1 (the run&#x27;s version)"),
        ("rerun_from_start", "Re-run from the start on v1 (the run&#x27;s version)"),
        ("rerun_from_failed_step_on_latest", "Re-run from the failed step on v2 (latest published)"),
        ("rerun_from_start_on_latest", "Re-run from the start on v2 (latest published)"),
    ):
        assert f'data-action="{action}">{label}</button>' in page, action

    default = client.post(
        reverse("admin:runs_run_changelist"), {"action": "rerun_from_start", "_selected_action": [run.id]}, follow=True
    ).content.decode()
    first_rerun = Run.objects.filter(rerun_of=run).latest("id")
    assert f"Re-run: {run.id} (new run {first_rerun.id}) on v1 (the run&#x27;s version)." in default
    assert AuditEvent.objects.get(action="run.rerun", target_id=str(first_rerun.id)).data["version"] == 1
    assert _run(first_rerun.id).status == RunStatus.FAILED  # v1 still has the bug

    answer = client.post(
        reverse("admin:runs_run_changelist"),
        {"action": "rerun_from_failed_step_on_latest", "_selected_action": [run.id], "index": 0, "_next": url},
        follow=True,
    ).content.decode()
    new = Run.objects.filter(rerun_of=run).latest("id")
    assert f"Re-run: {run.id} (new run {new.id}) on v2 (the latest published; run {run.id} ran v1)." in answer
    assert _run(new.id).status == RunStatus.COMPLETED
    page = client.get(reverse("admin:runs_run_change", args=[new.id])).content.decode()
    assert f"v2 (published since; run {run.id} ran v1)" in page  # the "re-run on" field
    assert f"Run created as a re-run of run {run.id}, on v2 (published since; run {run.id} ran v1)" in page
    # Its messages were sent: the run's page offers no further re-run, and says why.
    page = client.get(url).content.decode()
    assert 'data-action="rerun_from_start"' not in page and 'data-action="rerun_from_failed_step_on_latest"' not in page
    assert f"Run {new.id}, a re-run of this one, completed" in page


def test_a_rerun_on_the_latest_version_is_refused_when_it_cannot_take_the_run(broken, client):
    product, key, endpoint, (run, _) = broken
    api = client_for(key)
    # v3 renamed the failed step: from the failed step there is nothing to resume, from the start there is.
    assert _publish(product, endpoint, factories.email_step("greeting", subject="Hi", body="Hi")) == 3
    refused = api.post(f"/api/v1/runs/{run.id}/rerun", {"version": "latest"}, format="json")
    assert refused.status_code == 409
    assert refused.json()["error"]["message"] == "The failed step 'second' is not in v3: re-run it from the start."
    client.force_login(get_user_model().objects.create_superuser("ops", "ops@example.com", "pw"))
    page = client.get(reverse("admin:runs_run_change", args=[run.id])).content.decode()
    assert 'data-action="rerun_from_start_on_latest">Re-run from the start on v3' in page
    assert 'data-action="rerun_from_failed_step_on_latest"' not in page
    assert "The failed step &#x27;second&#x27; is not in v3: re-run it from the start." in page  # said why

    workflow_unpublish(workflow=Workflow.objects.get(product=product, key="w"), actor="test")
    refused = api.post(f"/api/v1/runs/{run.id}/rerun", {"version": "latest", "start_from": "start"}, format="json")
    assert refused.status_code == 409 and "no published version" in refused.json()["error"]["message"]
    page = client.get(reverse("admin:runs_run_change", args=[run.id])).content.decode()
    assert "_on_latest" not in page and 'data-action="rerun_from_start">' in page
    assert not Run.objects.filter(rerun_of=run).exists()
