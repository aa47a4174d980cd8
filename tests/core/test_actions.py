"""Queued operators' actions: a lost hint or a dead worker loses nothing, and actions on one target run
in the order they were asked for."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.core.actions import queued_action_run, queued_actions_reconcile
from apps.core.models import QueuedAction
from apps.deliveries.models import WebhookEndpoint
from apps.deliveries.services import webhook_endpoint_disable, webhook_endpoint_enable_request
from apps.workflows.models import Workflow
from apps.workflows.services import workflow_publish_request
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


def _enabled(endpoint) -> bool:
    return WebhookEndpoint.objects.get(id=endpoint.id).enabled


def test_an_action_whose_hint_was_lost_is_hinted_again_and_done(product, receiver, hinted, test_redis, settings):
    settings.ROWBELL_REQUEUE_AFTER_SECONDS = 0
    endpoint = factories.make_endpoint(product, receiver.url())
    webhook_endpoint_disable(endpoint=endpoint, actor="staff:ops")
    webhook_endpoint_enable_request(endpoint=endpoint, actor="staff:ops", replay=False)
    test_redis.flushdb()  # Redis restarted: the hint is gone
    assert hinted.run() == [] and not _enabled(endpoint)

    assert queued_actions_reconcile() == 1
    assert hinted.run() == ["apps.core.tasks.queued_action_run"]
    assert _enabled(endpoint)
    action = QueuedAction.objects.get(name="webhook.enable")
    assert (action.status, action.actor, action.outcome["replayable"]) == ("done", "staff:ops", 0)


def test_a_worker_that_died_mid_action_leaves_it_to_be_done_again(product, receiver, hinted):
    endpoint = factories.make_endpoint(product, receiver.url())
    webhook_endpoint_disable(endpoint=endpoint, actor="staff:ops")
    webhook_endpoint_enable_request(endpoint=endpoint, actor="staff:ops", replay=False)
    hinted.redis.flushdb()  # the hint is lost
    QueuedAction.objects.update(status="running", lease_until=timezone.now() - timedelta(seconds=1))

    queued_actions_reconcile()
    hinted.run()
    assert _enabled(endpoint) and QueuedAction.objects.get().status == "done"


def test_enabling_asked_before_a_later_disable_is_superseded(product, receiver, hinted):
    endpoint = factories.make_endpoint(product, receiver.url())
    webhook_endpoint_enable_request(endpoint=endpoint, actor="staff:ann", replay=True)  # to replay failures
    webhook_endpoint_disable(endpoint=endpoint, actor="staff:bob", reason="Their server is being replaced.")
    hinted.run()
    assert not _enabled(endpoint)  # Bob's later decision stands
    action = QueuedAction.objects.get(name="webhook.enable")
    assert action.status == "superseded" and "disabled again" in action.error


def test_actions_on_one_target_wait_for_the_earlier_ones(product):
    workflow = factories.make_workflow(product, key="w", steps=[factories.email_step()], publish=False)
    workflow_publish_request(workflow=workflow, actor="staff:ops")
    workflow_publish_request(workflow=workflow, actor="staff:ops")
    first, second = QueuedAction.objects.order_by("id")
    assert queued_action_run(action_id=second.id) is None  # not before the first
    assert queued_action_run(action_id=first.id) == "done"
    assert queued_action_run(action_id=second.id) == "done"
    # The second found the version the same operator published since asking: nothing published twice.
    assert Workflow.objects.get(id=workflow.id).versions.count() == 1
    assert [a.outcome for a in QueuedAction.objects.order_by("id")] == [{"published": 1}, {"published": 1}]


def test_a_worker_whose_action_was_taken_over_records_nothing(product, monkeypatch):
    from apps.core import actions

    workflow = factories.make_workflow(product, key="w", steps=[factories.email_step()], publish=False)
    workflow_publish_request(workflow=workflow, actor="staff:ops")
    action = QueuedAction.objects.get()

    def slow_publish(**kwargs):
        # Meanwhile its lease expired and another worker claimed it (attempt 2) and is doing it.
        QueuedAction.objects.filter(id=action.id).update(attempt=2, status="running")
        return {"published": "by the first worker"}

    monkeypatch.setattr(actions, "_function", lambda name: slow_publish)
    assert queued_action_run(action_id=action.id) is None
    action.refresh_from_db()
    assert (action.status, action.attempt, action.outcome) == ("running", 2, None)
