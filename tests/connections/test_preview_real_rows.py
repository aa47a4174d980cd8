"""Preview on real rows: a database trigger's draft rendered for a row of the customer's table, or a recorded
event's row, read with its related rows and recipient as a run would read them."""

import pytest

from apps.connections.models import Event

from .conftest import poll, writer_connect
from .test_recipients_from_rows import EMAIL, RECIPIENT, RELATED, _create, _customers_with_orders

pytestmark = pytest.mark.django_db(transaction=True)


def _preview(client, body, key="order-paid"):
    return client.post(f"/api/v1/workflows/{key}/preview", body, format="json")


def test_a_row_key_renders_each_step_as_that_row_s_customer_would_get_it(product_client, connection):
    assert _create(product_client, connection, related=RELATED, recipient=RECIPIENT).status_code == 201
    _customers_with_orders()

    response = _preview(product_client, {"row_key": 2})
    assert response.status_code == 200, response.json()
    [step] = response.json()["steps"]
    assert step["target"] == "bob@example.com"
    assert step["payload"]["subject"] == "Order 2 is paid, Bob" and step["payload"]["text"] == "Hello Bob"


def test_an_event_id_renders_its_first_row_or_the_one_named(product_client, connection):
    assert _create(product_client, connection, related=RELATED, recipient=RECIPIENT).status_code == 201
    assert product_client.post("/api/v1/workflows/order-paid/publish").status_code == 201
    _customers_with_orders()
    poll(connection_id=connection.id)
    with writer_connect() as app:
        app.execute("UPDATE public.orders SET paid = true WHERE id IN (3, 4)")
    poll(connection_id=connection.id)
    event = Event.objects.get(op="update")

    first = _preview(product_client, {"event_id": f"evt_{event.id}"}).json()["steps"][0]
    assert first["target"] == "cy@example.com" and first["payload"]["subject"] == "Order 3 is paid, Cy"
    named = _preview(product_client, {"event_id": f"evt_{event.id}", "row_key": 4}).json()["steps"][0]
    assert named["target"] == "ann@example.com" and named["payload"]["subject"] == "Order 4 is paid, Ann"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"row_key": 999}, 404, "row_key"),
        ({"event_id": "evt_999999"}, 404, "event_id"),
        ({"event_id": "nope"}, 404, "event_id"),
        ({"event_id": [6]}, 400, "event_id"),  # evt_6, or 6
        ({"row_key": 1, "row": {"id": 2}}, 400, "row"),  # the real row would replace it: said, not ignored
    ],
)
def test_a_row_or_event_that_does_not_exist_is_named(product_client, connection, body, status, field):
    assert _create(product_client, connection, related=RELATED, recipient=RECIPIENT).status_code == 201
    _customers_with_orders()
    response = _preview(product_client, body)
    assert response.status_code == status, response.json()
    assert field in {f["field"] for f in response.json()["error"].get("fields", [])}


def test_a_row_key_on_an_api_trigger_s_draft_is_refused_with_the_field(product_client, product):
    from tests import factories

    factories.make_workflow(product, key="order-paid", steps=[factories.email_step()])
    response = _preview(product_client, {"row_key": 1})
    assert response.status_code == 400
    assert "row_key" in {f["field"] for f in response.json()["error"]["fields"]}


def test_the_preview_reports_a_missing_related_row_as_an_error_not_a_blank(product_client, connection):
    steps = [{**EMAIL, "to": "ops@example.com"}]
    assert _create(product_client, connection, steps=steps, related=RELATED, recipient=RECIPIENT).status_code == 201
    _customers_with_orders()
    [step] = _preview(product_client, {"row_key": 5}).json()["steps"]  # order 5 has no customer
    assert "customer" in step["error"]


def test_a_row_whose_recipient_has_no_address_previews_as_the_skip_its_run_makes(product_client, connection):
    assert _create(product_client, connection, related=RELATED, recipient=RECIPIENT).status_code == 201
    _customers_with_orders()
    [step] = _preview(product_client, {"row_key": 5}).json()["steps"]  # order 5 has no customer, so no email
    assert "no email address" in step["skipped"]
    assert "errors" not in step and "error" not in step  # the subject naming the customer never renders for it
    # A made-up sample still lists every template to fix, for the author.
    [made_up] = _preview(product_client, {"row": {"id": 1}}).json()["steps"]
    assert made_up["skipped"] and {e["field"] for e in made_up["errors"]} == {"steps[0].subject", "steps[0].body"}


def test_an_organization_key_may_not_preview_real_rows(product, product_client, connection):
    from apps.tenants.services import organization_create
    from tests.conftest import client_for

    assert _create(product_client, connection, related=RELATED, recipient=RECIPIENT).status_code == 201
    _customers_with_orders()
    _, organization_key = organization_create(product=product, name="Acme", actor="test")
    response = _preview(client_for(organization_key), {"row_key": 2})
    assert response.status_code == 403
    assert "row_key" in {f["field"] for f in response.json()["error"]["fields"]}


def test_an_event_of_another_table_is_not_previewed(product_client, connection):
    from apps.connections.models import Connection

    assert _create(product_client, connection, related=RELATED, recipient=RECIPIENT).status_code == 201
    other = Event.objects.create(
        connection=Connection.objects.get(id=connection.id),
        source_id=1,
        xid=1,
        capture="c",
        table_name="public.customers",
        op="update",
        ids=[2],
        captured_at="2026-12-01T00:00:00Z",
    )
    response = _preview(product_client, {"event_id": f"evt_{other.id}"})
    assert response.status_code == 404
    assert "event_id" in {f["field"] for f in response.json()["error"]["fields"]}


@pytest.mark.parametrize("row_key", ["abc", "²"])
def test_a_row_key_of_the_wrong_type_is_a_400_naming_it(product_client, connection, row_key):
    assert _create(product_client, connection, related=RELATED, recipient=RECIPIENT).status_code == 201
    response = _preview(product_client, {"row_key": row_key})
    assert response.status_code == 400, response.json()
    assert "row_key" in {f["field"] for f in response.json()["error"]["fields"]}
