"""The operators' actions on connections and database-triggered workflows: queued, then done by a task that
reaches the customer database, each naming the staff user."""

import pytest
from django.urls import reverse

from apps.audit.models import AuditEvent
from apps.connections.capture import captures_installed
from apps.connections.customer import customer_connect
from apps.connections.models import Connection
from apps.connections.services import connection_captures_prune, connections_health_refresh
from apps.workflows.models import Workflow

from .conftest import writer_connect

pytestmark = pytest.mark.django_db(transaction=True)


def _installed(connection) -> list[str]:
    with customer_connect(connection) as conn:
        return sorted(captures_installed(conn, schema="rowbell"))


def _draft(product_client, receiver, connection):
    endpoint = product_client.post("/api/v1/webhooks", {"url": receiver.url()}, format="json").json()
    response = product_client.post(
        "/api/v1/workflows",
        {
            "key": "order-created",
            "trigger": {
                "type": "database",
                "connection": str(connection.id),
                "table": "public.orders",
                "events": ["row.created"],
            },
            "steps": [{"id": "hook", "type": "notify", "channel": "webhook", "webhook": endpoint["id"]}],
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    return Workflow.objects.get(key="order-created")


def _act(client, model: str, action: str, pk):
    return client.post(
        reverse(f"admin:{model}_changelist"), {"action": action, "_selected_action": [pk], "index": 0}, follow=True
    ).content.decode()


def test_publishing_from_the_admin_installs_the_trigger_in_a_task(
    operator, product_client, receiver, connection, hinted
):
    workflow = _draft(product_client, receiver, connection)
    page = _act(operator, "workflows_workflow", "publish", workflow.id)
    assert "Publishing order-created in the background" in page
    assert _installed(connection) == []  # the request did not reach the customer database
    assert hinted.run() == ["apps.core.tasks.queued_action_run"]
    assert len(_installed(connection)) == 1
    workflow.refresh_from_db()
    assert workflow.published_version.published_by == "staff:op"

    _act(operator, "workflows_workflow", "unpublish", workflow.id)
    hinted.run()
    assert _installed(connection) == [] and Workflow.objects.get(id=workflow.id).published_version is None
    actions = list(AuditEvent.objects.filter(actor="staff:op").order_by("id").values_list("action", flat=True))
    assert {
        "workflow.publish_requested",
        "connection.captures_installed",
        "workflow.published",
        "workflow.unpublish_requested",
        "workflow.unpublished",
    } <= set(actions)


def test_a_publish_the_database_refuses_is_reported_in_the_audit_log(
    operator, product_client, receiver, connection, hinted
):
    workflow = _draft(product_client, receiver, connection)
    Connection.objects.filter(id=connection.id).update(port=1)  # unreachable
    _act(operator, "workflows_workflow", "publish", workflow.id)
    hinted.run()
    assert Workflow.objects.get(id=workflow.id).published_version is None
    failed = AuditEvent.objects.get(action="workflow.publish_failed")
    assert failed.actor == "staff:op" and "cannot be reached" in failed.data["error"]


def test_check_now_shows_drift_and_repair_puts_the_trigger_back(operator, product_client, receiver, connection, hinted):
    workflow = _draft(product_client, receiver, connection)
    product_client.post(f"/api/v1/workflows/{workflow.key}/publish")
    connection_captures_prune(connection=connection, keep_none=True, actor="test")  # someone dropped it
    assert _installed(connection) == []

    page = _act(operator, "connections_connection", "check_now", connection.id)
    assert "Checking shop in the background" in page
    hinted.run()
    change = reverse("admin:connections_connection_change", args=[connection.id])
    assert "drift: 1 missing, 0 unused" in operator.get(change).content.decode()

    _act(operator, "connections_connection", "repair_triggers", connection.id)
    assert hinted.run() == ["apps.core.tasks.queued_action_run"]
    assert len(_installed(connection)) == 1
    assert "in order (1 installed)" in operator.get(change).content.decode()
    assert AuditEvent.objects.filter(action="connection.repair_requested", actor="staff:op").exists()
    assert AuditEvent.objects.filter(action="connection.captures_installed", actor="staff:op").exists()


def test_backlog_and_lag_are_read_by_a_beat_tick_and_shown_on_the_dashboard(
    operator, product_client, receiver, connection
):
    workflow = _draft(product_client, receiver, connection)
    product_client.post(f"/api/v1/workflows/{workflow.key}/publish")
    with writer_connect() as app:
        for status in ("a", "b", "c"):
            app.execute("INSERT INTO public.orders (status) VALUES (%s)", [status])
    assert connections_health_refresh() == 1
    connection.refresh_from_db()
    assert connection.backlog == 3 and connection.lag_seconds >= 0 and connection.health_checked_at
    home = operator.get(reverse("admin:index")).content.decode()
    table = home[home.index('id="connections-health"') :]
    assert ">shop</a>" in table and '<td class="num">3</td>' in table


def test_deleting_a_connection_from_the_admin_is_queued_refused_while_in_use_then_done(
    operator, product_client, receiver, connection, hinted
):
    from apps.core.models import QueuedAction

    workflow = _draft(product_client, receiver, connection)
    product_client.post(f"/api/v1/workflows/{workflow.key}/publish")
    _act(operator, "connections_connection", "delete_connection", connection.id)
    assert _installed(connection) != []  # nothing reached the customer database in the request
    hinted.run()
    refused = QueuedAction.objects.filter(name="connection.delete").latest("id")
    assert "workflow order-created" in refused.error and Connection.objects.filter(id=connection.id).exists()

    product_client.post(f"/api/v1/workflows/{workflow.key}/unpublish")
    _act(operator, "connections_connection", "delete_connection", connection.id)
    hinted.run()
    assert not Connection.objects.filter(id=connection.id).exists()
    assert Connection.all_objects.get(id=connection.id).deleted_at is not None
    assert _installed(connection) == []
    assert AuditEvent.objects.filter(action="connection.deleted", actor="staff:op").exists()


def test_a_backfill_from_the_admin_runs_for_every_existing_row_in_a_task_once(
    operator, product_client, receiver, connection, hinted, monkeypatch
):
    from apps.core.models import QueuedAction
    from apps.runs.models import Run
    from apps.runs.triggers import backfill

    workflow = _draft(product_client, receiver, connection)
    assert product_client.post("/api/v1/workflows/order-created/publish").status_code == 201
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status) SELECT 'new' FROM generate_series(1, 25)")
    Run.objects.all().delete()  # the inserts' own runs: the backfill is what is tested
    monkeypatch.setattr(backfill, "BACKFILL_LIMIT", 4)
    monkeypatch.setattr(backfill, "PAGES_PER_ACTION", 3)

    page = _act(operator, "workflows_workflow", "backfill", workflow.id)
    assert "Backfilling order-created in the background" in page
    assert not Run.objects.exists()  # the request did not reach the customer database
    assert hinted.run() == ["apps.core.tasks.queued_action_run"]
    assert Run.objects.filter(source="backfill").count() == 12  # 12 rows per action, then the rest queued
    _actions_done()
    assert Run.objects.filter(source="backfill").count() == 25
    actions = QueuedAction.objects.filter(name="workflow.backfill").order_by("id")
    assert [a.args.get("after") for a in actions] == [None, 12, 24]
    assert AuditEvent.objects.filter(action="workflow.backfill_requested", actor="staff:op").exists()

    _act(operator, "workflows_workflow", "backfill", workflow.id)  # again: nothing new
    _actions_done()
    assert Run.objects.filter(source="backfill").count() == 25


def _actions_done():
    """What workers do with queued actions, each in its turn, until none is left."""
    from apps.core.actions import queued_action_run
    from apps.core.models import ActionStatus, QueuedAction

    while waiting := list(QueuedAction.objects.filter(status=ActionStatus.QUEUED).order_by("id")):
        queued_action_run(action_id=waiting[0].id)
