import pytest

from apps.deliveries.models import Delivery

from .conftest import poll, writer_connect

pytestmark = pytest.mark.django_db(transaction=True)


def _subscribe(client, receiver, connection, **source):
    return client.post(
        "/api/v1/webhooks",
        {"url": receiver.url(), "source": {"connection": str(connection.id), "table": "public.orders", **source}},
        format="json",
    )


def test_join_table_changes_are_reported_against_the_parent_rows(product_client, receiver, connection):
    response = _subscribe(
        product_client, receiver, connection, events=["relation.added", "relation.removed"], through="public.order_tags"
    )
    assert response.status_code == 201, response.json()
    assert response.json()["source"]["column"] == "order_id"  # found from the foreign key
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status) VALUES ('a'), ('b')")
        app.execute("INSERT INTO public.order_tags VALUES (1, 'gift'), (1, 'rush'), (2, 'gift')")
        app.execute("DELETE FROM public.order_tags WHERE tag = 'rush'")
    poll(connection_id=connection.id)
    sent = [(d.payload["type"], d.payload["table"], sorted(d.payload["ids"])) for d in Delivery.objects.order_by("id")]
    # One message per statement, each parent once, reported against public.orders.
    assert sent == [("relation.added", "public.orders", [1, 2]), ("relation.removed", "public.orders", [1])]


def test_moving_a_join_row_to_another_parent_removes_and_adds(product_client, receiver, connection):
    _subscribe(
        product_client, receiver, connection, events=["relation.added", "relation.removed"], through="public.order_tags"
    )
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status) VALUES ('a'), ('b')")
        app.execute("INSERT INTO public.order_tags VALUES (1, 'gift')")
        app.execute("UPDATE public.order_tags SET order_id = 2")  # gave nothing before
        app.execute("UPDATE public.order_tags SET tag = 'rush'")  # the link stays with order 2: a new tag
    poll(connection_id=connection.id)
    sent = [(d.payload["type"], d.payload["ids"]) for d in Delivery.objects.order_by("id")]
    assert sent == [
        ("relation.added", [1]),
        ("relation.added", [2]),
        ("relation.removed", [1]),
        ("relation.added", [2]),
        ("relation.removed", [2]),
    ]


@pytest.mark.parametrize(
    "source, field",
    [
        ({"events": ["relation.added"], "through": "public.nope"}, "source.through"),
        ({"events": ["relation.added"], "through": "public.customers"}, "source.column"),  # no FK to orders
        ({"events": ["relation.added"], "through": "public.order_tags", "column": "tag"}, "source.column"),
        ({"events": ["row.created"], "through": "public.order_tags"}, "source.events"),
    ],
)
def test_bad_relation_sources_are_refused(product_client, receiver, connection, source, field):
    response = _subscribe(product_client, receiver, connection, **source)
    assert response.status_code == 400, response.json()
    assert field in {f["field"] for f in response.json()["error"]["fields"]}
