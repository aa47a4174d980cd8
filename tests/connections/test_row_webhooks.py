import pytest
from standardwebhooks.webhooks import Webhook

from apps.connections.capture import captures_installed
from apps.connections.customer import customer_connect
from apps.connections.models import Connection
from apps.deliveries.models import Delivery, DeliveryStatus, WebhookEndpoint
from apps.deliveries.services import deliveries_send

from .conftest import CUSTOMER_DB, admin_connect, pickup_rewind, poll, writer_connect

pytestmark = pytest.mark.django_db(transaction=True)


def _subscribe(client, receiver, connection, **source):
    return client.post(
        "/api/v1/webhooks",
        {"url": receiver.url(), "source": {"connection": str(connection.id), "table": "public.orders", **source}},
        format="json",
    )


def _send_all():
    ids = list(Delivery.objects.filter(status=DeliveryStatus.QUEUED).values_list("id", flat=True))
    deliveries_send(delivery_ids=ids)


def test_subscribing_installs_the_trigger_and_row_changes_arrive_as_thin_signed_webhooks(
    product_client, receiver, connection
):
    response = _subscribe(product_client, receiver, connection, events=["row.created", "row.deleted"])
    assert response.status_code == 201, response.json()
    created = response.json()
    assert created["source"] == {
        "connection": str(connection.id),
        "table": "public.orders",
        "events": ["row.created", "row.deleted"],
        "columns": [],
    }
    endpoint = WebhookEndpoint.objects.get(id=created["id"])
    with customer_connect(connection) as conn:
        assert endpoint.capture in captures_installed(conn, schema="rowbell")

    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status) VALUES ('new'), ('new'), ('new')")  # one statement
        app.execute("UPDATE public.orders SET status = 'paid'")  # not subscribed
        app.execute("DELETE FROM public.orders WHERE id = 2")
    poll(connection_id=connection.id)
    _send_all()

    assert receiver.wait_for(2)
    bodies = []
    for hit in receiver.requests:
        bodies.append(Webhook(created["secret"]).verify(hit["body"], hit["headers"]))
    by_type = {b["type"]: b for b in bodies}
    assert set(by_type) == {"row.created", "row.deleted"}
    assert by_type["row.created"]["ids"] == [1, 2, 3] and by_type["row.deleted"]["ids"] == [2]
    assert by_type["row.created"]["webhook_id"] == created["id"]
    assert by_type["row.created"]["table"] == "public.orders"
    assert by_type["row.created"]["event_id"].startswith("evt_") and by_type["row.created"]["occurred_at"]


def test_a_bulk_statement_is_one_event_sent_in_documented_chunks(product_client, receiver, connection, settings):
    settings.ROWBELL_WEBHOOK_IDS_PER_MESSAGE = 1000
    _subscribe(product_client, receiver, connection, events=["row.created"])
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status) SELECT 'bulk' FROM generate_series(1, 2500)")
    poll(connection_id=connection.id)
    deliveries = list(Delivery.objects.order_by("chunk"))
    assert [len(d.payload["ids"]) for d in deliveries] == [1000, 1000, 500]
    assert [d.payload["chunk"] for d in deliveries] == [{"index": i, "count": 3} for i in range(3)]
    assert len({d.event_id for d in deliveries}) == 1


def test_updates_of_listed_columns_only(product_client, receiver, connection):
    _subscribe(product_client, receiver, connection, events=["row.updated"], columns=["status"])
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status, total) VALUES ('new', 1)")
        app.execute("UPDATE public.orders SET total = 2")
        app.execute("UPDATE public.orders SET status = 'paid'")
    poll(connection_id=connection.id)
    assert [(d.payload["type"], d.payload["ids"]) for d in Delivery.objects.all()] == [("row.updated", [1])]


def test_reading_an_event_again_notifies_once(product_client, receiver, connection):
    _subscribe(product_client, receiver, connection, events=["row.created"])
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status) VALUES ('a')")
    poll(connection_id=connection.id)
    pickup_rewind(connection)
    poll(connection_id=connection.id)
    assert Delivery.objects.count() == 1


@pytest.mark.parametrize(
    "source, field",
    [
        ({"table": "public.nope", "events": ["row.created"]}, "source.table"),
        ({"table": "public.no_pk", "events": ["row.created"]}, "source.table"),
        ({"table": "public.hidden", "events": ["row.created"]}, "source.table"),
        ({"table": "public.orders", "events": ["row.exploded"]}, "source.events"),
        ({"table": "public.orders", "events": [{}]}, "source.events"),
        ({"table": "public.orders", "events": ["row.updated"], "columns": ["status", "nope"]}, "source.columns[1]"),
        ({"table": "public.orders", "events": ["row.created"], "columns": ["status"]}, "source.columns"),
        ({"table": "public.orders", "events": ["row.created"], "sql": "1=1"}, "source.sql"),
    ],
)
def test_bad_sources_are_refused_with_the_field_and_nothing_is_installed(
    product_client, receiver, connection, source, field
):
    response = product_client.post(
        "/api/v1/webhooks",
        {"url": receiver.url(), "source": {"connection": str(connection.id), **source}},
        format="json",
    )
    assert response.status_code == 400, response.json()
    assert field in {f["field"] for f in response.json()["error"]["fields"]}
    assert not WebhookEndpoint.objects.exists()
    with customer_connect(connection) as conn:
        assert captures_installed(conn, schema="rowbell") == {}


def test_a_connection_of_another_product_cannot_be_used(receiver, connection):
    from tests import factories
    from tests.conftest import client_for

    other = client_for(factories.make_product("Other")[1])
    response = _subscribe(other, receiver, connection, events=["row.created"])
    assert response.status_code == 400
    assert response.json()["error"]["fields"][0]["field"] == "source.connection"


@pytest.mark.parametrize(
    "source",
    [
        {"table": 'public.orders"; DROP TABLE public.customers; --', "events": ["row.created"]},
        {"table": "public.orders", "events": ["row.updated"], "columns": ['status") IS NULL; DROP TABLE x; --']},
        {"table": "public.orders; DELETE FROM public.orders", "events": ["row.created"]},
    ],
)
def test_injection_through_names_never_reaches_the_database(product_client, receiver, connection, source):
    response = product_client.post(
        "/api/v1/webhooks",
        {"url": receiver.url(), "source": {"connection": str(connection.id), **source}},
        format="json",
    )
    assert response.status_code == 400
    with admin_connect(CUSTOMER_DB) as admin:
        assert admin.execute("SELECT to_regclass('public.customers')").fetchone()[0] is not None


def test_the_triggers_command_shows_drift_repairs_it_and_prunes(product_client, receiver, connection):
    from io import StringIO

    from django.core.management import CommandError, call_command

    def run(*args):
        out = StringIO()
        call_command("triggers", *args, "--connection", str(connection.id), stdout=out)
        return out.getvalue()

    created = _subscribe(product_client, receiver, connection, events=["row.created"]).json()
    capture = WebhookEndpoint.objects.get(id=created["id"]).capture
    assert f"{capture}: installed" in run("status")

    with admin_connect(CUSTOMER_DB) as admin:  # someone dropped our trigger
        admin.execute(f"DROP TRIGGER {capture}_insert ON public.orders")
    with pytest.raises(CommandError):
        run("status")
    run("install")
    assert f"{capture}: installed" in run("status")

    WebhookEndpoint.objects.filter(id=created["id"]).update(enabled=False)
    with pytest.raises(CommandError):
        run("status")
    pruned = run("prune")
    assert "retired 1 trigger(s)" in pruned and f'DROP TRIGGER "{capture}_insert" ON "public"."orders";' in pruned
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status) VALUES ('a')")
    assert poll(connection_id=connection.id) == 0

    WebhookEndpoint.objects.filter(id=created["id"]).update(enabled=True)
    run("install")
    assert "retired 1 trigger(s)" in run("uninstall")


def test_disabling_the_last_subscriber_retires_its_trigger_and_enabling_restores_it(
    product_client, receiver, connection, hinted, django_capture_on_commit_callbacks
):
    first = _subscribe(product_client, receiver, connection, events=["row.created"]).json()
    second = _subscribe(product_client, receiver, connection, events=["row.created"]).json()  # same capture
    capture = WebhookEndpoint.objects.get(id=first["id"]).capture

    def installed():
        with customer_connect(connection) as conn:
            return capture in captures_installed(conn, schema="rowbell")

    with django_capture_on_commit_callbacks(execute=True):
        assert product_client.post(f"/api/v1/webhooks/{first['id']}/disable").json()["enabled"] is False
    assert hinted.run() == ["apps.core.tasks.queued_action_run"]
    assert installed()  # the second endpoint still needs it
    with django_capture_on_commit_callbacks(execute=True):
        product_client.post(f"/api/v1/webhooks/{second['id']}/disable")
    assert installed()  # the customer database is not reached in the request...
    hinted.run()
    assert not installed()  # ...but by the task it queued
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status) VALUES ('unwatched')")
    assert poll(connection_id=connection.id) == 0

    assert product_client.post(f"/api/v1/webhooks/{first['id']}/enable").json()["enabled"] is True
    assert installed()
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status) VALUES ('watched')")
    poll(connection_id=connection.id)
    assert [d.payload["ids"] for d in Delivery.objects.all()] == [[2]]


def test_disabling_while_the_database_is_down_still_disables(
    product_client, receiver, connection, hinted, django_capture_on_commit_callbacks
):
    created = _subscribe(product_client, receiver, connection, events=["row.created"]).json()
    Connection.objects.filter(id=connection.id).update(port=1)
    with django_capture_on_commit_callbacks(execute=True):
        response = product_client.post(f"/api/v1/webhooks/{created['id']}/disable")
    assert response.status_code == 200 and response.json()["enabled"] is False
    hinted.run()  # the trigger cannot be retired now: the task says so and the endpoint stays disabled
    assert WebhookEndpoint.objects.get(id=created["id"]).enabled is False


def test_switching_notify_on_keeps_existing_subscriptions_working(
    product_client, receiver, connection, settings, hinted, django_capture_on_commit_callbacks
):
    first = _subscribe(product_client, receiver, connection, events=["row.created"]).json()
    _subscribe(product_client, receiver, connection, events=["row.created"])
    settings.ROWBELL_CAPTURE_NOTIFY = True  # an operator turns the wake-up on, then disables one endpoint
    with django_capture_on_commit_callbacks(execute=True):
        product_client.post(f"/api/v1/webhooks/{first['id']}/disable")
    hinted.run()
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status) VALUES ('a')")
    poll(connection_id=connection.id)
    assert Delivery.objects.count() == 1  # the second endpoint still gets its events
