from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection as service_db

from apps.audit.models import AuditEvent
from apps.connections.models import Connection
from tests import factories
from tests.conftest import client_for

from .conftest import CAPTURE_ROLE, CUSTOMER_DB, WEAK_ROLE, admin_connect

pytestmark = pytest.mark.django_db


def _checks(body):
    return {c["name"]: c for c in body["checks"]}


def _create(client, **body):
    return client.post("/api/v1/connections", {"name": "shop", **body}, format="json")


def test_a_connection_is_checked_saved_and_never_shows_its_password(product_client, customer_db):
    response = _create(product_client, **customer_db, tables=["public.orders", "public.customers"])
    assert response.status_code == 201, response.json()
    body = response.json()
    assert "password" not in body
    checks = _checks(body)
    assert [c["name"] for c in body["checks"]] == [
        "reachable",
        "authenticated",
        "schema",
        "table public.orders",
        "table public.customers",
    ]
    assert all(c["ok"] for c in body["checks"]), body["checks"]
    assert checks["schema"]["detail"] == f"{CAPTURE_ROLE} owns schema rowbell."
    with service_db.cursor() as cursor:
        cursor.execute("SELECT password FROM connections_connection WHERE id = %s", [body["id"]])
        stored = cursor.fetchone()[0]
    assert "capture-secret" not in stored and Connection.objects.get(id=body["id"]).password == "capture-secret"
    audit = AuditEvent.objects.get(action="connection.created", target_id=body["id"])
    assert "capture-secret" not in str(audit.data)
    assert "password" not in product_client.get(f"/api/v1/connections/{body['id']}").json()


def test_a_dsn_can_stand_for_the_fields(product_client, customer_db):
    dsn = (
        f"postgresql://{customer_db['user']}:{customer_db['password']}@{customer_db['host']}:{customer_db['port']}/{CUSTOMER_DB}"
        "?sslmode=disable"
    )
    response = _create(product_client, dsn=dsn)
    assert response.status_code == 201, response.json()
    assert response.json()["sslmode"] == "disable" and response.json()["user"] == CAPTURE_ROLE


def test_dsn_and_fields_together_are_refused(product_client, customer_db):
    response = _create(product_client, dsn="postgresql://a@b/c", host="x", database="y", user="z")
    assert response.status_code == 400
    assert response.json()["error"]["fields"][0]["field"] == "dsn"


def test_an_unreachable_server_is_an_itemized_422_and_nothing_is_saved(product_client):
    response = _create(product_client, host="127.0.0.1", port=1, database="x", user="y")
    assert response.status_code == 422
    error = response.json()["error"]
    checks = _checks(error)
    assert error["code"] == "connection_check_failed"
    assert checks["reachable"]["ok"] is False and "Connection refused" in checks["reachable"]["detail"]
    assert checks["authenticated"]["detail"] == "Not checked: an earlier check failed."
    assert not Connection.objects.exists()


def test_an_unknown_user_fails_authentication_with_the_servers_reason(product_client, customer_db):
    response = _create(product_client, **{**customer_db, "user": "nobody_at_all"})
    assert response.status_code == 422
    checks = _checks(response.json()["error"])
    assert checks["reachable"]["ok"] is True
    assert (
        checks["authenticated"]["ok"] is False
        and 'role "nobody_at_all" does not exist' in checks["authenticated"]["detail"]
    )


def test_missing_privileges_are_named_with_the_grant_that_fixes_them(product_client, customer_db):
    weak = {**customer_db, "user": WEAK_ROLE, "password": "weak"}
    taken = _checks(_create(product_client, **weak).json()["error"])
    assert taken["schema"]["detail"] == f"Schema rowbell belongs to {CAPTURE_ROLE}, not to {WEAK_ROLE}."
    response = _create(product_client, **weak, schema="weak_events", tables=["public.orders"])
    assert response.status_code == 422
    checks = _checks(response.json()["error"])
    assert checks["authenticated"]["ok"] is True
    assert checks["schema"]["ok"] is False and "may not create it" in checks["schema"]["detail"]
    # The weak role has no USAGE on public's tables either.
    assert checks["table public.orders"]["ok"] is False
    assert (
        'GRANT SELECT, TRIGGER ON TABLE "public"."orders" TO "rowbell_weak_test"'
        in checks["table public.orders"]["detail"]
    )


def test_check_reports_a_privilege_revoked_later(product_client, customer_db):
    created = _create(product_client, **customer_db).json()
    url = f"/api/v1/connections/{created['id']}/check"
    assert product_client.post(url, {"tables": ["public.orders"]}, format="json").json()["ok"] is True
    with admin_connect(CUSTOMER_DB) as conn:
        conn.execute(f"REVOKE TRIGGER ON public.orders FROM {CAPTURE_ROLE}")
    try:
        body = product_client.post(url, {"tables": ["public.orders"]}, format="json").json()
    finally:
        with admin_connect(CUSTOMER_DB) as conn:
            conn.execute(f"GRANT TRIGGER ON public.orders TO {CAPTURE_ROLE}")
    assert body["ok"] is False
    assert "Missing TRIGGER privilege" in _checks(body)["table public.orders"]["detail"]
    assert AuditEvent.objects.filter(action="connection.checked", target_id=created["id"]).count() == 2


def test_tables_lists_what_the_user_can_read_with_columns_and_primary_keys(product_client, customer_db):
    created = _create(product_client, **customer_db).json()
    tables = {
        f"{t['schema']}.{t['name']}": t
        for t in product_client.get(f"/api/v1/connections/{created['id']}/tables").json()
    }
    # Not public.hidden (no SELECT), not Rowbell's own schema.
    assert set(tables) == {"public.customers", "public.orders", "public.no_pk", "public.order_tags"}
    orders = tables["public.orders"]
    assert orders["primary_key"] == ["id"]
    assert {c["name"]: (c["type"], c["nullable"]) for c in orders["columns"]} == {
        "id": ("bigint", False),
        "customer_id": ("bigint", True),
        "status": ("text", False),
        "total": ("numeric(10,2)", True),
        "paid": ("boolean", True),
        "org_id": ("text", True),
    }
    assert tables["public.no_pk"]["primary_key"] == []


def test_tables_of_a_database_that_went_away_is_a_502(product, product_client):
    connection = Connection.objects.create(
        product=product, name="gone", host="127.0.0.1", port=1, database="x", user="y"
    )
    response = product_client.get(f"/api/v1/connections/{connection.id}/tables")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "customer_database_unavailable"


def test_connections_of_another_product_are_not_found(product_client, customer_db):
    created = _create(product_client, **customer_db).json()
    other = client_for(factories.make_product("Other")[1])
    assert other.get(f"/api/v1/connections/{created['id']}").status_code == 404
    assert other.post(f"/api/v1/connections/{created['id']}/check", {}, format="json").status_code == 404
    assert other.get("/api/v1/connections").json() == []


@pytest.mark.parametrize(
    "body, field",
    [
        ({"host": "h", "database": "d", "user": "u", "schema": "Bad-Name"}, "schema"),
        ({"host": "h", "database": "d", "user": "u", "tables": ["drop table x"]}, "tables[0]"),
        ({"database": "d", "user": "u"}, "host"),
        ({"host": "h", "database": "d", "user": "u", "sslmode": "sometimes"}, "sslmode"),
    ],
)
def test_bad_connection_input_names_the_field(product_client, body, field):
    response = _create(product_client, **body)
    assert response.status_code == 400
    assert field in {f["field"] for f in response.json()["error"]["fields"]}


def test_connection_grants_refuses_what_is_not_an_identifier():
    with pytest.raises(CommandError):
        call_command("connection_grants", "--user", "x; DROP TABLE y", "--tables", "public.orders", stdout=StringIO())
    with pytest.raises(CommandError):
        call_command("connection_grants", "--user", "rowbell", "--tables", "public.orders;--", stdout=StringIO())


def test_a_connection_without_a_password_is_saved_and_works(product_client, customer_db):
    # This server trusts local connections: no password is needed, and none is stored.
    response = _create(product_client, **{**customer_db, "password": ""})
    assert response.status_code == 201, response.json()
    assert Connection.objects.get(id=response.json()["id"]).password == ""


@pytest.mark.parametrize(
    "body, reason",
    [
        ({"host": "/var/run/postgresql", "database": "x", "user": "y"}, "Unix sockets"),
        ({"host": "127.0.0.1,10.0.0.1", "database": "x", "user": "y"}, "Unix sockets and host lists"),
    ],
)
def test_sockets_and_host_lists_are_refused(product_client, body, reason):
    response = _create(product_client, **body)
    assert response.status_code == 422
    checks = _checks(response.json()["error"])
    assert checks["allowed"]["ok"] is False and reason in checks["allowed"]["detail"]


def test_rowbells_own_database_is_refused(product_client):
    own = service_db.settings_dict
    response = _create(
        product_client, host="127.0.0.1", port=int(own["PORT"] or 5432), database=own["NAME"], user=own["USER"]
    )
    assert response.status_code == 422
    assert _checks(response.json()["error"])["allowed"]["detail"] == "This is Rowbell's own database."


def test_loopback_is_refused_unless_allowed(product_client, customer_db, settings):
    settings.ROWBELL_CONNECTION_ALLOW = []
    response = _create(product_client, **customer_db)
    assert response.status_code == 422
    assert "loopback" in _checks(response.json()["error"])["allowed"]["detail"]
    assert not Connection.objects.exists()


@pytest.mark.parametrize(
    "dsn, reason",
    [
        ("postgresql://%99@db.example.com/shop", "not UTF-8"),
        ("postgresql://app@db.example.com/sh%00op", "forbidden value %00"),
        ("postgresql://app@db.example.com:99999/shop", "less than or equal to 65535"),
        ("postgresql://app@db.example.com/shop?sslmode=sometimes", "not a valid choice"),
        ("postgresql://app@db.example.com/" + "d" * 64, "no more than 63 characters"),
    ],
)
def test_a_dsn_is_held_to_the_same_rules_as_the_separate_fields(product_client, dsn, reason):
    response = product_client.post("/api/v1/connections", {"name": "shop", "dsn": dsn}, format="json")
    assert response.status_code == 400
    fields = response.json()["error"]["fields"]
    assert fields[0]["field"] == "dsn" and reason in fields[0]["reason"], fields


def test_a_second_connection_of_the_same_name_says_which_one_has_it(product, product_client, customer_db):
    # The name is taken by a connection on another database: the new one is refused, saying what to do.
    taken = Connection.objects.create(product=product, name="shop", host="127.0.0.1", port=1, database="x", user="y")
    response = _create(product_client, **customer_db, tables=["public.orders"])
    assert response.status_code == 409
    assert response.json()["error"]["fields"] == [
        {
            "field": "name",
            "reason": f"A connection named 'shop' already exists ({taken.id}): use it, or DELETE "
            f"/api/v1/connections/{taken.id} first; or choose another name.",
        }
    ]
