"""Rowbell's own database is refused by what it is (server and database identity), not by how its address
is written; and a customer database host is judged in every spelling the socket layer takes."""

import dataclasses
import os
import tempfile
from contextlib import contextmanager

import psycopg
import pytest
from django.db import connection as service_db
from psycopg import pq

from apps.connections import customer
from apps.connections.customer import OWN_DATABASE, OwnDatabaseRefused, customer_connect
from apps.connections.models import Connection

from .conftest import WEAK_ROLE, admin_connect

pytestmark = pytest.mark.django_db


def _checks(body):
    return {c["name"]: c for c in body["checks"]}


def _own(**fields):
    own = service_db.settings_dict
    return {"name": "shop", "port": int(own["PORT"] or 5432), "database": own["NAME"], "user": own["USER"], **fields}


def _rowbell_tables() -> set[str]:
    with service_db.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row[0] for row in cursor.fetchall()}


# The test server listens on 127.0.0.1 only; an AF_INET6 socket reaches it through ::ffff:127.0.0.1.
@pytest.mark.parametrize("host", ["::ffff:127.0.0.1", "127.1", "2130706433", "localhost"])
def test_rowbells_own_database_is_refused_however_its_address_is_written(product_client, host):
    response = product_client.post("/api/v1/connections", _own(host=host), format="json")
    assert response.status_code == 422, response.json()
    assert _checks(response.json()["error"])["allowed"] == {"name": "allowed", "ok": False, "detail": OWN_DATABASE}
    assert not Connection.objects.exists()


def test_own_database_reached_by_an_address_rowbell_does_not_know_is_refused_by_identity(product_client, monkeypatch):
    # The service database on a private address, reached through a name, a NAT or a proxy that the
    # address comparison cannot recognise.
    own = customer._service_database()
    monkeypatch.setattr(customer, "_service_database", lambda: (set(), own[1], own[2]))
    response = product_client.post("/api/v1/connections", _own(host="127.0.0.1"), format="json")
    assert response.status_code == 422
    assert _checks(response.json()["error"])["allowed"]["detail"] == OWN_DATABASE


def test_tables_rows_and_capture_never_reach_rowbells_own_database(product, product_client, receiver):
    # A connection stored by other means (before this check existed): every use connects through the check.
    stored = Connection.objects.create(
        product=product,
        name="own",
        **{k: v for k, v in _own(host="::ffff:127.0.0.1").items() if k != "name"},
        password="",
        sslmode="prefer",
    )
    tables = product_client.get(f"/api/v1/connections/{stored.id}/tables")
    assert tables.status_code != 200
    assert "deliveries_webhookendpoint" not in tables.content.decode() and OWN_DATABASE in tables.content.decode()

    # A row-event webhook on the endpoints table (which holds every product's URLs and secrets) is refused.
    assert "deliveries_webhookendpoint" in _rowbell_tables()
    hook = product_client.post(
        "/api/v1/webhooks",
        {"url": receiver.url(), "source": {"connection": str(stored.id), "table": "public.deliveries_webhookendpoint"}},
        format="json",
    )
    assert hook.status_code >= 400
    with admin_connect(service_db.settings_dict["NAME"]) as admin:
        assert (
            admin.execute(
                "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'deliveries_webhookendpoint'::regclass "
                "AND NOT tgisinternal"
            ).fetchone()[0]
            == 0
        )
        assert admin.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'rowbell'").fetchone()[0] == 0


def test_a_role_without_superuser_rights_is_refused_too(customer_db):
    # pg_control_system() is executable by any role (PostgreSQL 15): the identity is read as the customer's user.
    stored = Connection(**{k: v for k, v in _own(host="::ffff:127.0.0.1").items() if k != "name"})
    stored.user, stored.password, stored.sslmode = WEAK_ROLE, "weak", "prefer"
    with pytest.raises(OwnDatabaseRefused):
        customer_connect(stored)


def test_where_pg_control_system_is_revoked_the_server_is_known_by_its_start_time(customer_db):
    with _revoked():
        for autocommit in (True, False):
            with pytest.raises(OwnDatabaseRefused):
                customer_connect(_weak_own(), autocommit=autocommit)


@contextmanager
def _revoked(dbname=None):
    """pg_control_system() revoked from PUBLIC in a database (the service's by default; the weak role
    loses it, the service's superuser keeps it)."""
    with admin_connect(dbname or service_db.settings_dict["NAME"]) as admin:
        admin.execute("REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC")
        try:
            yield
        finally:
            admin.execute("GRANT EXECUTE ON FUNCTION pg_control_system() TO PUBLIC")


def _weak_own() -> Connection:
    stored = Connection(**{k: v for k, v in _own(host="::ffff:127.0.0.1").items() if k != "name"})
    stored.user, stored.password, stored.sslmode = WEAK_ROLE, "weak", "prefer"
    return stored


def test_after_the_service_database_restarts_its_own_database_is_still_refused(customer_db, monkeypatch):
    # A long-running worker read the service database's identity before the server restarted: the start
    # time it read then is not the server's now.
    customer_connect(
        Connection(
            host="::ffff:127.0.0.1",
            port=customer_db["port"],
            database=customer_db["database"],
            user=customer_db["user"],
            password=customer_db["password"],
            sslmode="prefer",
        )
    ).close()
    assert customer._own_identity
    monkeypatch.setattr(
        customer,
        "_own_identity",
        {
            key: dataclasses.replace(identity, started=identity.started - 3_600_000_000)
            for key, identity in customer._own_identity.items()
        },
    )
    with _revoked():
        for autocommit in (True, False):
            with pytest.raises(OwnDatabaseRefused):
                customer_connect(_weak_own(), autocommit=autocommit)


def test_the_start_time_compared_does_not_depend_on_the_sessions_time_zone(customer_db):
    with admin_connect() as admin, _revoked():
        # Rowbell's own session reads in UTC; the customer's role is set to another zone.
        admin.execute(f"ALTER ROLE {WEAK_ROLE} SET TimeZone = 'Asia/Kolkata'")
        try:
            with pytest.raises(OwnDatabaseRefused):
                customer_connect(_weak_own())
        finally:
            admin.execute(f"ALTER ROLE {WEAK_ROLE} RESET TimeZone")


@pytest.fixture
def round_trips(monkeypatch):
    """Counts the round trips (the server's ReadyForQuery messages) each connection customer_connect opens
    makes once connected: libpq's trace of the connection, read back when `counted(conn)` is called."""
    traces = {}
    connect = psycopg.connect

    def traced(*args, **kwargs):
        conn = connect(*args, **kwargs)
        log = traces[id(conn)] = tempfile.TemporaryFile("w+")
        conn.pgconn.trace(os.dup(log.fileno()))
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        return conn

    def counted(conn) -> int:
        conn.pgconn.untrace()
        log = traces.pop(id(conn))
        log.seek(0)
        return sum("\tReadyForQuery\t" in line for line in log)

    monkeypatch.setattr(psycopg, "connect", traced)
    yield counted
    for log in traces.values():
        log.close()


def test_a_customer_connect_spends_one_round_trip_on_the_identity(customer_db, round_trips):
    stored = Connection(
        host="::ffff:127.0.0.1",
        port=customer_db["port"],
        database=customer_db["database"],
        user=customer_db["user"],
        password=customer_db["password"],
        sslmode="prefer",
    )
    for autocommit in (True, False):
        with customer_connect(stored, autocommit=autocommit) as conn:
            assert round_trips(conn) == 1
            assert conn.info.transaction_status == pq.TransactionStatus.IDLE and conn.autocommit is autocommit
    # Where pg_control_system() is revoked, its refusal is one more.
    with _revoked(customer_db["database"]):
        stored.user, stored.password = WEAK_ROLE, "weak"
        for autocommit in (True, False):
            with customer_connect(stored, autocommit=autocommit) as conn:
                assert round_trips(conn) == 2
                assert conn.info.transaction_status == pq.TransactionStatus.IDLE


def test_another_database_on_the_same_server_is_a_customers(customer_db):
    stored = Connection(
        host="::ffff:127.0.0.1",
        port=customer_db["port"],
        database=customer_db["database"],
        user=customer_db["user"],
        password=customer_db["password"],
        sslmode="prefer",
    )
    with customer_connect(stored) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == customer_db["database"]


@pytest.mark.parametrize(
    "host",
    [
        "::127.0.0.1",
        "::ffff:0:7f00:1",
        "2002:7f00:1::",
        "64:ff9b::7f00:1",
        "127\u30020\u30020\u30021",
        "127.1",
        "0x7f.1",
        "017700000001",
    ],
)
def test_a_host_carrying_loopback_is_refused_in_every_spelling(product_client, settings, host):
    settings.ROWBELL_CONNECTION_ALLOW = []
    response = product_client.post(
        "/api/v1/connections",
        {"name": "shop", "host": host, "port": 5432, "database": "shop", "user": "rowbell"},
        format="json",
    )
    assert response.status_code == 422
    allowed = _checks(response.json()["error"])["allowed"]
    assert (
        allowed["ok"] is False and "loopback" in allowed["detail"] and "ROWBELL_CONNECTION_ALLOW" in allowed["detail"]
    )


def test_the_refusal_leaves_no_connection_open(customer_db):
    stored = Connection(**{k: v for k, v in _own(host="::ffff:127.0.0.1").items() if k != "name"})
    stored.sslmode = "prefer"
    before = _backends()
    for _ in range(3):
        with pytest.raises(psycopg.OperationalError):
            customer_connect(stored)
    assert _backends() <= before


def _backends() -> int:
    with admin_connect() as admin:
        return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'rowbell'").fetchone()[0]
