"""Rowbell's own database is refused by what it is (server and database identity), not by how its address
is written; and a customer database host is judged in every spelling the socket layer takes."""

import psycopg
import pytest
from django.db import connection as service_db

from apps.connections import customer
from apps.connections.customer import OWN_DATABASE, OwnDatabaseRefused, customer_connect
from apps.connections.models import Connection

from .conftest import WEAK_ROLE, admin_connect

pytestmark = pytest.mark.django_db


def _checks(body):
    return {c["name"]: c for c in body["checks"]}


def _own(**fields):
    own = service_db.settings_dict
    return {"name": "shop", "port": int(own["PORT"] or 5432), "database": own["NAME"], "user": own["USER"],
            **fields}


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


def test_own_database_reached_by_an_address_rowbell_does_not_know_is_refused_by_identity(product_client,
                                                                                         monkeypatch):
    # The service database on a private address, reached through a name, a NAT or a proxy that the
    # address comparison cannot recognise.
    own = customer._service_database()
    monkeypatch.setattr(customer, "_service_database", lambda: (set(), own[1], own[2]))
    response = product_client.post("/api/v1/connections", _own(host="127.0.0.1"), format="json")
    assert response.status_code == 422
    assert _checks(response.json()["error"])["allowed"]["detail"] == OWN_DATABASE


def test_tables_rows_and_capture_never_reach_rowbells_own_database(product, product_client, receiver):
    # A connection stored by other means (before this check existed): every use connects through the check.
    stored = Connection.objects.create(product=product, name="own", **{
        k: v for k, v in _own(host="::ffff:127.0.0.1").items() if k != "name"}, password="", sslmode="prefer")
    tables = product_client.get(f"/api/v1/connections/{stored.id}/tables")
    assert tables.status_code != 200
    assert "deliveries_webhookendpoint" not in tables.content.decode() and OWN_DATABASE in tables.content.decode()

    # A row-event webhook on the endpoints table (which holds every product's URLs and secrets) is refused.
    assert "deliveries_webhookendpoint" in _rowbell_tables()
    hook = product_client.post("/api/v1/webhooks", {"url": receiver.url(), "source": {
        "connection": str(stored.id), "table": "public.deliveries_webhookendpoint"}}, format="json")
    assert hook.status_code >= 400
    with admin_connect(service_db.settings_dict["NAME"]) as admin:
        assert admin.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'deliveries_webhookendpoint'::regclass "
                             "AND NOT tgisinternal").fetchone()[0] == 0
        assert admin.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'rowbell'").fetchone()[0] == 0


def test_a_role_without_superuser_rights_is_refused_too(customer_db):
    # pg_control_system() is executable by any role (PostgreSQL 15): the identity is read as the customer's user.
    stored = Connection(**{k: v for k, v in _own(host="::ffff:127.0.0.1").items() if k != "name"})
    stored.user, stored.password, stored.sslmode = WEAK_ROLE, "weak", "prefer"
    with pytest.raises(OwnDatabaseRefused):
        customer_connect(stored)


def test_where_pg_control_system_is_revoked_the_server_is_known_by_its_start_time(customer_db):
    own = service_db.settings_dict["NAME"]
    stored = Connection(**{k: v for k, v in _own(host="::ffff:127.0.0.1").items() if k != "name"})
    stored.user, stored.password, stored.sslmode = WEAK_ROLE, "weak", "prefer"
    with admin_connect(own) as admin:
        admin.execute("REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC")
        try:
            for autocommit in (True, False):
                with pytest.raises(OwnDatabaseRefused):
                    customer_connect(stored, autocommit=autocommit)
        finally:
            admin.execute("GRANT EXECUTE ON FUNCTION pg_control_system() TO PUBLIC")


def test_another_database_on_the_same_server_is_a_customers(customer_db):
    stored = Connection(host="::ffff:127.0.0.1", port=customer_db["port"], database=customer_db["database"],
                        user=customer_db["user"], password=customer_db["password"], sslmode="prefer")
    with customer_connect(stored) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == customer_db["database"]


@pytest.mark.parametrize("host", ["::127.0.0.1", "::ffff:0:7f00:1", "2002:7f00:1::", "64:ff9b::7f00:1",
                                  "127\u30020\u30020\u30021", "127.1", "0x7f.1", "017700000001"])
def test_a_host_carrying_loopback_is_refused_in_every_spelling(product_client, settings, host):
    settings.ROWBELL_CONNECTION_ALLOW = []
    response = product_client.post("/api/v1/connections", {"name": "shop", "host": host, "port": 5432,
                                                            "database": "shop", "user": "rowbell"}, format="json")
    assert response.status_code == 422
    allowed = _checks(response.json()["error"])["allowed"]
    assert allowed["ok"] is False and "loopback" in allowed["detail"] and "ROWBELL_CONNECTION_ALLOW" in allowed["detail"]


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
        return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'rowbell'"
                             ).fetchone()[0]
