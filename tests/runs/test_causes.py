"""A run's cause: the trigger source that launched it and the cause's id in that source (no column per
source), one run per cause and recipient whatever the source, and the migration that gave existing runs
theirs."""

import importlib

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.connections.models import Connection, Event
from apps.runs.models import Run, RunStatus
from apps.runs.services import request_start, trigger_create
from apps.runs.triggers import TRIGGER_SOURCES
from tests import factories

pytestmark = pytest.mark.django_db


def _api_run(product):
    factories.make_workflow(product, key="w", steps=[factories.email_step(subject="s", body="b")])
    request_id, _ = trigger_create(
        tenant=factories.tenant_of(product),
        workflow="w",
        priority="normal",
        recipients=[{"id": "u1", "email": "u1@example.com"}],
        data={},
    )
    request_start(request_id=request_id)
    return Run.objects.get(request_id=request_id)


def test_an_api_run_records_its_request_as_its_cause(product):
    run = _api_run(product)
    assert (run.source, run.cause_id, run.status) == ("api", str(run.request_id), RunStatus.COMPLETED)
    completed = AuditEvent.objects.get(action="run.completed", target_id=str(run.id))
    assert completed.data == {"request_id": str(run.request_id)}
    assert set(TRIGGER_SOURCES) >= {"api", "database"}


def test_one_run_per_cause_and_recipient_whatever_the_source(product):
    run = _api_run(product)
    same = {"workflow_version_id": run.workflow_version_id, "product_id": run.product_id, "recipient": {}}
    with pytest.raises(IntegrityError), transaction.atomic():
        Run.objects.create(source="api", cause_id=run.cause_id, request_id=run.request_id, **same)
    # A source added later needs no column of its own: its runs are as idempotent.
    Run.objects.create(source="schedule", cause_id="tick-1", **same)
    with pytest.raises(IntegrityError), transaction.atomic():
        Run.objects.create(source="schedule", cause_id="tick-1", **same)
    with pytest.raises(IntegrityError), transaction.atomic():  # and every run has a cause
        Run.objects.create(**same)
    # A re-run is explicit: the same cause again.
    Run.objects.create(source="api", cause_id=run.cause_id, request_id=run.request_id, rerun_of=run, **same)


def test_the_migration_gives_existing_runs_their_cause(product):
    migration = importlib.import_module("apps.runs.migrations.0010_run_source_cause")
    api = _api_run(product)
    shop = Connection.objects.create(
        product=product, name="shop", host="db.example.com", database="shop", user="rowbell"
    )
    event = Event.objects.create(
        connection=shop,
        source_id=1,
        xid=1,
        capture="c",
        table_name="public.orders",
        op="insert",
        ids=[1],
        captured_at=timezone.now(),
    )
    database = Run.objects.create(
        source="database",
        cause_id=str(event.id),
        event=event,
        product=product,
        workflow_version_id=api.workflow_version_id,
        recipient={},
    )
    with connection.cursor() as cursor:  # as before the migration (the test's transaction rolls it back)
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # no deferred key checks pending before ALTER TABLE
        cursor.execute("ALTER TABLE runs_run DROP CONSTRAINT run_has_a_cause")
        cursor.execute("DROP INDEX run_once_per_cause")  # a partial unique index
        cursor.execute("UPDATE runs_run SET source = '', cause_id = ''")
        cursor.execute(migration.FILL)
    assert Run.objects.filter(id=api.id).values_list("source", "cause_id").get() == ("api", str(api.request_id))
    assert Run.objects.filter(id=database.id).values_list("source", "cause_id").get() == ("database", str(event.id))
