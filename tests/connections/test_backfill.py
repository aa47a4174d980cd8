"""Backfill: a database-triggered workflow runs for rows that already exist, page by page at low priority;
a dry run says what it would start with rendered examples; the same backfill twice starts nothing new."""

from decimal import Decimal

import pytest

from apps.audit.models import AuditEvent
from apps.deliveries.models import Delivery
from apps.runs.models import Run, RunStatus
from apps.runs.services import runs_execute

from .conftest import writer_connect
from .test_recipients_from_rows import RECIPIENT, RELATED, _create

pytestmark = pytest.mark.django_db(transaction=True)


def _published(client, connection):
    assert _create(client, connection, related=RELATED, recipient=RECIPIENT).status_code == 201
    published = client.post("/api/v1/workflows/order-paid/publish")
    assert published.status_code == 201, published.json()


def _orders():
    with writer_connect() as app:
        app.execute(
            "INSERT INTO public.customers (email, name) SELECT 'c' || g || '@example.com', 'C' || g "
            "FROM generate_series(1, 12) g"
        )
        app.execute(
            "INSERT INTO public.orders (customer_id, total, paid) SELECT g, g, g % 3 = 0 FROM generate_series(1, 12) g"
        )


def _backfill(client, **body):
    return client.post("/api/v1/workflows/order-paid/backfill", body, format="json")


def test_a_dry_run_counts_and_renders_three_examples_and_starts_nothing(product_client, connection):
    _published(product_client, connection)
    _orders()
    response = _backfill(product_client, where={"column": "paid", "op": "eq", "value": True}, dry_run=True)
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["matched"], body["would_start"], body["rows"], body["next"]) == (4, 4, 4, None)
    assert [e["row_key"] for e in body["examples"]] == [3, 6, 9]
    assert body["examples"][0]["steps"][0]["target"] == "c3@example.com"
    assert body["examples"][0]["steps"][0]["payload"]["subject"] == "Order 3 is paid, C3"
    assert not Run.objects.exists()


def test_pages_resume_where_they_stopped_and_the_same_backfill_twice_starts_nothing_new(product_client, connection):
    _published(product_client, connection)
    _orders()
    first = _backfill(product_client, since={"column": "total", "after": 4}, limit=5).json()
    assert (first["rows"], first["started"], first["next"]) == (5, 5, 8)
    second = _backfill(product_client, since={"column": "total", "after": 4}, limit=5, after=first["next"]).json()
    assert (second["rows"], second["started"], second["next"]) == (4, 4, None)
    again = _backfill(product_client, since={"column": "total", "after": 4}, limit=100).json()
    assert (again["rows"], again["started"]) == (9, 0)  # idempotent: every row already has its run

    runs = Run.objects.filter(source="backfill")
    assert runs.count() == 9 and {r.priority for r in runs} == {"low"}
    runs_execute(run_ids=list(runs.values_list("id", flat=True)))
    assert set(Run.objects.values_list("status", flat=True)) == {RunStatus.COMPLETED}
    assert sorted(Delivery.objects.values_list("target", flat=True)) == sorted(
        f"c{i}@example.com" for i in range(4, 13)
    )
    detail = product_client.get(f"/api/v1/runs/{runs.order_by('id').first().id}").json()
    assert detail["event"]["type"] == "backfill" and detail["event"]["ids"] == [4]
    audited = AuditEvent.objects.filter(action="workflow.backfilled").order_by("id")
    assert [a.data["started"] for a in audited] == [5, 4, 0]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"where": {"column": "nope", "op": "eq", "value": 1}}, "where.column"),
        ({"where": {"column": "paid", "op": "eq", "value": "yes"}}, "where.value"),
        ({"limit": 0}, "limit"),
        ({"dry_runn": True}, "dry_runn"),
    ],
)
def test_bad_input_names_the_field(product_client, connection, body, field):
    _published(product_client, connection)
    response = _backfill(product_client, **body)
    assert response.status_code == 400, response.json()
    assert field in {f["field"] for f in response.json()["error"]["fields"]}, response.json()


def test_a_workflow_without_a_published_per_row_database_trigger_is_refused(product_client, product):
    from tests import factories

    factories.make_workflow(product, key="order-paid", steps=[factories.email_step()])
    response = _backfill(product_client)
    assert response.status_code == 400 and "for_each: row" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"where": "x"}, "where"),
        ({"where": {}}, "where"),
        ({"where": {"and": "ab"}}, "where"),
        ({"after": "abc"}, "after"),
        ({"since": {"column": "created_at", "after": "2026-01-01"}}, "since.column"),
        ({"since": {"column": "total", "after": "soon"}}, "since.after"),
        (
            {"where": {"column": "nope", "op": "eq", "value": 1}, "since": {"column": "total", "after": 1}},
            "where.column",
        ),
    ],
)
def test_malformed_predicates_and_keys_are_a_400_naming_the_field(product_client, connection, body, field):
    _published(product_client, connection)
    response = _backfill(product_client, **body)
    assert response.status_code == 400, response.json()
    fields = {f["field"] for f in response.json()["error"]["fields"]}
    assert any(f == field or f.startswith(field + ".") or f.startswith(field + "[") for f in fields), fields


def test_a_backfilled_run_re_runs_from_the_start_and_a_new_version_backfills_nobody_twice(product_client, connection):
    _published(product_client, connection)
    _orders()
    assert _backfill(product_client, where={"column": "paid", "op": "eq", "value": True}).json()["started"] == 4
    run = Run.objects.filter(source="backfill").order_by("id").first()
    Run.objects.filter(id=run.id).update(status=RunStatus.FAILED)
    answer = product_client.post(f"/api/v1/runs/{run.id}/rerun", {"start_from": "start"}, format="json")
    assert answer.status_code == 201, answer.json()
    runs_execute(run_ids=list(Run.objects.filter(status=RunStatus.QUEUED).values_list("id", flat=True)))
    rerun = Run.objects.get(id=answer.json()["id"])
    assert rerun.status == RunStatus.COMPLETED, rerun.error
    assert product_client.get(f"/api/v1/runs/{rerun.id}").json()["event"]["ids"] == [3]

    # Publishing again (version 2) and repeating the backfill starts nothing for rows already backfilled.
    assert product_client.post("/api/v1/workflows/order-paid/publish").status_code == 201
    again = _backfill(product_client, where={"column": "paid", "op": "eq", "value": True}).json()
    assert again["started"] == 0


def test_a_predicate_over_a_fractional_value_compares_it_exactly(product_client, connection):
    _published(product_client, connection)
    _orders()
    response = _backfill(product_client, where={"column": "total", "op": "gte", "value": 11.01}, dry_run=True)
    assert response.status_code == 200, response.json()
    assert response.json()["matched"] == 1 and [e["row_key"] for e in response.json()["examples"]] == [12]
    audited = _backfill(product_client, since={"column": "total", "after": 10.5}, limit=10)
    assert audited.status_code == 202 and audited.json()["started"] == 2, audited.json()
    assert AuditEvent.objects.get(action="workflow.backfilled").data["since"]["after"] == Decimal("10.5")


def test_a_value_its_column_cannot_compare_names_where_not_after(product_client, connection):
    _published(product_client, connection)
    _orders()
    response = product_client.post(
        "/api/v1/workflows/order-paid/backfill",
        '{"dry_run": true, "where": {"column": "id", "op": "gt", "value": 1e200000}}',
        content_type="application/json",
    )
    assert response.status_code == 400, response.json()
    fields = {f["field"] for f in response.json()["error"]["fields"]}
    assert fields == {"where"}, response.json()
