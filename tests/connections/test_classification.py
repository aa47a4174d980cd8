import pytest

from apps.deliveries.models import Delivery, WebhookEndpoint

from .conftest import CUSTOMER_DB, admin_connect, poll, writer_connect

pytestmark = pytest.mark.django_db(transaction=True)

PAID = {"column": "paid", "op": "eq", "value": True}


def _classify(client, receiver, connection, predicate, on="both", name="paid"):
    return client.post(
        "/api/v1/webhooks",
        {
            "url": receiver.url(),
            "source": {
                "connection": str(connection.id),
                "table": "public.orders",
                "classification": {"name": name, "predicate": predicate, "on": on},
            },
        },
        format="json",
    )


def _transitions(connection):
    poll(connection_id=connection.id)
    return [
        (d.payload["type"].removeprefix("classification."), d.payload["ids"]) for d in Delivery.objects.order_by("id")
    ]


def test_only_transitions_are_logged_entered_and_left(product_client, receiver, connection):
    response = _classify(product_client, receiver, connection, PAID)
    assert response.status_code == 201, response.json()
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status, paid) VALUES ('new', false), ('new', false)")  # nothing
        app.execute("UPDATE public.orders SET paid = true WHERE id = 1")  # 1 entered
        app.execute("UPDATE public.orders SET total = 5 WHERE id = 1")  # still paid: nothing
        app.execute("UPDATE public.orders SET paid = true WHERE id = 1")  # true to true: nothing
        app.execute("UPDATE public.orders SET paid = false WHERE id = 1")  # 1 left
        app.execute("INSERT INTO public.orders (status, paid) VALUES ('new', true)")  # 3 enters as it is born
        app.execute("UPDATE public.orders SET paid = NULL WHERE id = 3")  # NULL counts as false: 3 left
        app.execute("UPDATE public.orders SET paid = true WHERE id IN (2, 3)")  # 2 and 3 entered together
        app.execute("DELETE FROM public.orders WHERE id = 2")  # a paid row deleted has left
    assert _transitions(connection) == [
        ("entered", [1]),
        ("left", [1]),
        ("entered", [3]),
        ("left", [3]),
        ("entered", [2, 3]),
        ("left", [2]),
    ]
    assert Delivery.objects.first().payload["classification"] == "paid"


def test_entered_only(product_client, receiver, connection):
    _classify(product_client, receiver, connection, PAID, on="entered")
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status, paid) VALUES ('new', false)")
        app.execute("UPDATE public.orders SET paid = true")
        app.execute("UPDATE public.orders SET paid = false")
        app.execute("DELETE FROM public.orders")
    assert _transitions(connection) == [("entered", [1])]


def test_compound_predicates(product_client, receiver, connection):
    big_and_done = {
        "and": [
            {"column": "status", "op": "in", "value": ["paid", "shipped"]},
            {"or": [{"column": "total", "op": "gte", "value": 100}, {"column": "customer_id", "op": "is_not_null"}]},
        ]
    }
    assert _classify(product_client, receiver, connection, big_and_done, on="entered").status_code == 201
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status, total) VALUES ('new', 150), ('new', 5)")
        app.execute("UPDATE public.orders SET status = 'paid'")  # only 1 has total >= 100
    assert _transitions(connection) == [("entered", [1])]


@pytest.mark.parametrize(
    "predicate, field, reason",
    [
        ({"column": "nope", "op": "eq", "value": 1}, "source.classification.predicate.column", "No column"),
        (
            {"column": "Paid", "op": "eq", "value": True},
            "source.classification.predicate.column",
            "Did you mean 'paid'?",
        ),
        ({"column": ["paid"], "op": "eq", "value": True}, "source.classification.predicate.column", "No column"),
        ({"column": "paid", "op": {}, "value": True}, "source.classification.predicate.op", "One of"),
        ({"column": "paid", "op": "like", "value": True}, "source.classification.predicate.op", "One of"),
        ({"column": "total", "op": "gt", "value": "100"}, "source.classification.predicate.value", "number"),
        ({"column": "paid", "op": "eq", "value": 1}, "source.classification.predicate.value", "boolean"),
        ({"column": "status", "op": "in", "value": "paid"}, "source.classification.predicate.value", "list"),
        (
            {"column": "status", "op": "in", "value": ["paid", "a\u0000"]},
            "source.classification.predicate.value[1]",
            "NUL character",
        ),
        ({"column": "paid", "op": "is_null", "value": True}, "source.classification.predicate.value", "no value"),
        ({"and": []}, "source.classification.predicate", "non-empty list"),
        (
            {"and": [{"and": [{"and": [{"and": [{"and": [PAID]}]}]}]}]},
            "source.classification.predicate.and[0].and[0].and[0].and[0].and[0]",
            "Too deep",
        ),
        ({"or": [PAID, {"column": "paid", "op": "eq"}]}, "source.classification.predicate.or[1].value", "boolean"),
    ],
)
def test_bad_predicates_name_the_place_and_install_nothing(
    product_client, receiver, connection, predicate, field, reason
):
    response = _classify(product_client, receiver, connection, predicate)
    assert response.status_code == 400, response.json()
    fields = {f["field"]: f["reason"] for f in response.json()["error"]["fields"]}
    assert field in fields and reason in fields[field], fields
    assert not WebhookEndpoint.objects.exists()


HOSTILE = "x'); DROP TABLE public.customers; --"


@pytest.mark.parametrize(
    "predicate, name",
    [
        ({"column": "status", "op": "eq", "value": HOSTILE}, "paid"),
        # Dollar quotes: a value must not end the function body's quoting (the body's tag is random).
        ({"column": "status", "op": "eq", "value": "x$rb$; CREATE TABLE public.pwned(x int); SELECT $rb$"}, "paid"),
        ({"column": "status", "op": "eq", "value": "a$$b$rb_0$c"}, "paid"),
        ({"column": "status", "op": "in", "value": ["a", HOSTILE]}, "paid"),
        ({"column": 'status" = status OR true; --', "op": "eq", "value": "a"}, "paid"),
        ({"column": "status", "op": "eq; DROP TABLE public.customers", "value": "a"}, "paid"),
        ({"column": "status", "op": "eq", "value": "a"}, "x'; DROP TABLE public.customers; --"),
    ],
)
def test_injection_through_every_field_never_reaches_the_database(
    product_client, receiver, connection, predicate, name
):
    response = _classify(product_client, receiver, connection, predicate, name=name)
    if response.status_code == 201:
        # Accepted only as a plain value: the hostile text is compared as a string, never run.
        value = predicate["value"] if isinstance(predicate["value"], str) else predicate["value"][-1]
        with writer_connect() as app:
            app.execute("INSERT INTO public.orders (status) VALUES (%s)", [value])
        assert _transitions(connection) == [("entered", [1])]
    else:
        assert response.status_code == 400
    with admin_connect(CUSTOMER_DB) as admin:
        assert admin.execute("SELECT to_regclass('public.customers')").fetchone()[0] is not None
        assert admin.execute("SELECT to_regclass('public.pwned')").fetchone()[0] is None


def test_a_json_value_keeps_every_digit_in_its_literal():
    from decimal import Decimal

    from apps.connections.conditions import value_literal

    assert value_literal({"a": Decimal("1.50000000000000000001")}) == '{"a": 1.50000000000000000001}'
