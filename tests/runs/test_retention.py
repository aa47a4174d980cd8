"""Retention keeps Rowbell's own tables bounded: finished work past its product's retention is deleted in
batches, with its children; held and unfinished work never is; the audit trail has its own, longer period."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.core.models import ActionStatus, MetricCounter, QueuedAction
from apps.deliveries.models import Delivery, DeliveryAttempt, DeliveryEvent, DeliveryStatus
from apps.deliveries.services import deliveries_send
from apps.runs.models import Escalation, Run, RunStatus, RunStep, TriggerRequest
from apps.runs.retention import retention_prune
from apps.runs.services import request_start, runs_execute, trigger_create
from tests import factories
from tests.deliveries.test_webhook_delivery import _trigger_and_start

pytestmark = pytest.mark.django_db


def _aged(request, days: float) -> None:
    """Move a request, its runs and deliveries `days` into the past."""
    then = timezone.now() - timedelta(days=days)
    TriggerRequest.objects.filter(id=request.id).update(created_at=then)
    Run.objects.filter(request=request).update(created_at=then, completed_at=then)
    Delivery.objects.filter(request=request).update(created_at=then)


@pytest.fixture
def delivered(product, receiver):
    """A finished request: its run completed, its webhook delivered (attempt and status history recorded)."""
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(product, key="w", steps=[factories.webhook_step(endpoint)])

    def make(days: float):
        request = _trigger_and_start(product)
        deliveries_send(delivery_ids=list(Delivery.objects.filter(request=request).values_list("id", flat=True)))
        runs_execute(run_ids=list(Run.objects.filter(request=request).values_list("id", flat=True)))
        _aged(request, days)
        return request

    return make


def test_finished_work_past_its_retention_is_deleted_with_its_children_and_counted(delivered, settings):
    settings.ROWBELL_RETENTION_DAYS = 30
    old, recent = delivered(31), delivered(29)
    run = Run.objects.get(request=old)
    assert run.status == RunStatus.COMPLETED and RunStep.objects.filter(run=run).exists()
    delivery = Delivery.objects.get(request=old)
    assert DeliveryAttempt.objects.filter(delivery=delivery).exists()
    assert DeliveryEvent.objects.filter(delivery=delivery).exists()

    deleted = retention_prune()
    assert not TriggerRequest.objects.filter(id=old.id).exists() and not Run.objects.filter(id=run.id).exists()
    assert not Delivery.objects.filter(id=delivery.id).exists()
    assert not DeliveryAttempt.objects.filter(delivery_id=delivery.id).exists()
    assert not RunStep.objects.filter(run_id=run.id).exists()
    assert TriggerRequest.objects.filter(id=recent.id).exists() and Run.objects.filter(request=recent).exists()
    assert deleted["runs_run"] == 1 and deleted["runs_triggerrequest"] == 1 and deleted["deliveries_delivery"] == 1
    counted = dict(
        MetricCounter.objects.filter(name="rowbell_retention_deleted_rows_total").values_list("labels", "value")
    )
    assert counted['table="runs_run"'] == 1 and counted['table="deliveries_deliveryattempt"'] >= 1
    assert AuditEvent.objects.filter(target_id=str(run.id)).exists()  # the audit trail keeps its own period
    assert retention_prune() == {}  # nothing more to do


def test_held_unfinished_and_undecided_work_is_never_deleted(product, receiver, delivered, settings):
    settings.ROWBELL_RETENTION_DAYS = 1
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(product, key="held", steps=[factories.webhook_step(endpoint)], sandbox=True)

    waiting = delivered(10)
    Run.objects.filter(request=waiting).update(status=RunStatus.WAITING, completed_at=None)
    undecided = delivered(10)
    failed_run = Run.objects.get(request=undecided)
    Run.objects.filter(id=failed_run.id).update(status=RunStatus.FAILED)
    Escalation.objects.create(run=failed_run, product=product, error="boom")
    rerun_of = delivered(10)
    original = Run.objects.get(request=rerun_of)
    newer = delivered(0)
    Run.objects.filter(request=newer).update(rerun_of=original)
    request_id, _ = trigger_create(
        tenant=factories.tenant_of(product), workflow="held", recipients=[{"id": "u"}], data={}, priority="normal"
    )
    request_start(request_id=request_id)
    held_request = TriggerRequest.objects.get(id=request_id)
    Run.objects.filter(request=held_request).update(status=RunStatus.COMPLETED)  # even so, its delivery is held
    _aged(held_request, 10)
    assert Delivery.objects.get(request=held_request).status == DeliveryStatus.HELD
    accepted_id, _ = trigger_create(
        tenant=factories.tenant_of(product), workflow="w", recipients=[{"id": "u"}], data={}, priority="normal"
    )
    TriggerRequest.objects.filter(id=accepted_id).update(created_at=timezone.now() - timedelta(days=10))

    retention_prune()
    for request in (waiting, undecided, rerun_of, held_request):
        assert TriggerRequest.objects.filter(id=request.id).exists() and Run.objects.filter(request=request).exists()
    assert Delivery.objects.filter(request=held_request, status=DeliveryStatus.HELD).exists()
    assert TriggerRequest.objects.filter(id=accepted_id, status="accepted").exists()

    # Once operators decide, the failed run goes at the next tick.
    Escalation.objects.filter(run=failed_run).update(decided_at=timezone.now(), decision="dismissed")
    retention_prune()
    assert not Run.objects.filter(id=failed_run.id).exists()


def test_a_product_s_own_retention_applies_to_its_work_only(delivered, product, product_client, settings):
    settings.ROWBELL_RETENTION_DAYS = 30
    for value in (0, 3651, "7"):
        refused = product_client.patch(f"/api/v1/products/{product.id}", {"retention_days": value}, format="json")
        assert refused.status_code == 400 and refused.json()["error"]["fields"][0]["field"] == "retention_days"
    answer = product_client.patch(f"/api/v1/products/{product.id}", {"retention_days": 7}, format="json")
    assert answer.status_code == 200 and answer.json()["retention_days"] == 7
    assert AuditEvent.objects.filter(action="product.updated", data__retention_days=7).exists()
    other, _ = factories.make_product(name="Other")
    mine = delivered(8)
    other_endpoint = factories.make_endpoint(other, "http://127.0.0.1:9/x")
    factories.make_workflow(other, key="w", steps=[factories.webhook_step(other_endpoint)], sandbox=True)
    theirs_id, _ = trigger_create(
        tenant=factories.tenant_of(other), workflow="w", recipients=[{"id": "u"}], data={}, priority="normal"
    )
    request_start(request_id=theirs_id)
    Delivery.objects.filter(request_id=theirs_id).update(status=DeliveryStatus.DISCARDED)
    Run.objects.filter(request_id=theirs_id).update(status=RunStatus.COMPLETED)
    _aged(TriggerRequest.objects.get(id=theirs_id), 8)

    retention_prune()
    assert not TriggerRequest.objects.filter(id=mine.id).exists()  # 8 days > its product's 7
    assert TriggerRequest.objects.filter(id=theirs_id).exists()  # 8 days < the default 30


def test_old_finished_actions_and_audit_rows_past_their_own_period_go(product, settings):
    settings.ROWBELL_RETENTION_DAYS = 30
    settings.ROWBELL_AUDIT_RETENTION_DAYS = 365
    old = timezone.now() - timedelta(days=400)
    done = QueuedAction.objects.create(name="x", target_type="t", target_id="1", actor="a", status=ActionStatus.DONE)
    pending = QueuedAction.objects.create(name="x", target_type="t", target_id="2", actor="a")
    QueuedAction.objects.filter(id__in=[done.id, pending.id]).update(requested_at=old)
    ancient = AuditEvent.objects.create(action="x.y", target_type="t", target_id="1", product_id=product.id)
    kept = AuditEvent.objects.create(action="x.y", target_type="t", target_id="2", product_id=product.id)

    with connection.cursor() as cursor:  # the audit table refuses UPDATE: age the row as it was written
        cursor.execute("DELETE FROM audit_auditevent WHERE id = %s", [ancient.id])
        cursor.execute(
            "INSERT INTO audit_auditevent (created_at, product_id, actor, action, target_type, target_id, data) "
            "VALUES (%s, %s, 'system', 'x.y', 't', 'ancient', '{}')",
            [old, product.id],
        )

    retention_prune()
    assert not QueuedAction.objects.filter(id=done.id).exists() and QueuedAction.objects.filter(id=pending.id).exists()
    assert (
        not AuditEvent.objects.filter(target_id="ancient").exists() and AuditEvent.objects.filter(id=kept.id).exists()
    )


def test_the_dashboard_and_metrics_work_over_what_remains(delivered, admin_client, product_client, settings):
    settings.ROWBELL_RETENTION_DAYS = 1
    delivered(3)
    delivered(0)
    retention_prune()
    assert product_client.get("/api/v1/metrics").status_code == 200
    assert product_client.get("/api/v1/runs").status_code == 200
    assert admin_client.get("/admin/").status_code == 200


def test_age_counts_from_when_work_finished_not_from_when_it_started(delivered, settings):
    settings.ROWBELL_RETENTION_DAYS = 30
    request = delivered(40)
    Run.objects.filter(request=request).update(completed_at=timezone.now() - timedelta(minutes=1))  # waited long
    Delivery.objects.filter(request=request).update(completed_at=timezone.now() - timedelta(minutes=1))
    retention_prune()
    assert Run.objects.filter(request=request).exists() and Delivery.objects.filter(request=request).exists()


def test_re_running_a_run_retention_deleted_is_a_404(delivered, settings):
    from apps.core.exceptions import NotFound
    from apps.runs.engine import run_rerun

    settings.ROWBELL_RETENTION_DAYS = 1
    run = Run.objects.get(request=delivered(3))
    Run.objects.filter(id=run.id).update(status=RunStatus.FAILED)
    run.refresh_from_db()
    retention_prune()
    with pytest.raises(NotFound):
        run_rerun(run=run, from_start=True, actor="test")
