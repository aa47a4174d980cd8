"""A real customer database for the capture tests, with Rowbell's role made from `connection_grants`."""

from io import StringIO

import psycopg
import pytest
from django.core.management import call_command

CUSTOMER_DB = "rowbell_customer_test"
CAPTURE_ROLE = "rowbell_capture_test"
WEAK_ROLE = "rowbell_weak_test"
# The customer's application: writes the watched tables, has no rights on Rowbell's schema.
WRITER_ROLE = "rowbell_writer_test"

SCHEMA = """
CREATE TABLE public.customers (id bigserial PRIMARY KEY, email text NOT NULL, name text);
CREATE TABLE public.orders (id bigserial PRIMARY KEY, customer_id bigint REFERENCES public.customers(id),
                            status text NOT NULL DEFAULT 'new', total numeric(10, 2), paid boolean DEFAULT false,
                            org_id text);
CREATE TABLE public.no_pk (note text);
CREATE TABLE public.order_tags (order_id bigint NOT NULL REFERENCES public.orders(id), tag text NOT NULL,
                                PRIMARY KEY (order_id, tag));
CREATE TABLE public.hidden (id int PRIMARY KEY);
"""


def server() -> tuple[str, int]:
    """The PostgreSQL server the tests use (the service database's, so a private cluster can stand in)."""
    from django.conf import settings

    cfg = settings.DATABASES["default"]
    return cfg.get("HOST") or "127.0.0.1", int(cfg.get("PORT") or 5432)


def admin_connect(dbname="postgres"):
    host, port = server()
    return psycopg.connect(host=host, port=port, user="postgres", dbname=dbname, autocommit=True)


def _drop(conn):
    conn.execute(f"DROP DATABASE IF EXISTS {CUSTOMER_DB} WITH (FORCE)")
    for role in (CAPTURE_ROLE, WEAK_ROLE, WRITER_ROLE):
        conn.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.fixture(scope="session")
def customer_db():
    with admin_connect() as conn:
        _drop(conn)
        conn.execute(f"CREATE DATABASE {CUSTOMER_DB}")
        conn.execute(f"CREATE ROLE {WEAK_ROLE} LOGIN PASSWORD 'weak'")
        conn.execute(f"GRANT CONNECT ON DATABASE {CUSTOMER_DB} TO {WEAK_ROLE}")
        conn.execute(f"CREATE ROLE {WRITER_ROLE} LOGIN")
        conn.execute(f"GRANT CONNECT ON DATABASE {CUSTOMER_DB} TO {WRITER_ROLE}")
    out = StringIO()
    call_command(
        "connection_grants",
        "--user",
        CAPTURE_ROLE,
        "--tables",
        "public.orders,public.customers,public.no_pk,public.order_tags",
        stdout=out,
    )
    with admin_connect(CUSTOMER_DB) as conn:
        conn.execute(SCHEMA)
        conn.execute(out.getvalue())  # the DBA's script, as printed
        conn.execute(f"ALTER ROLE {CAPTURE_ROLE} PASSWORD 'capture-secret'")
        conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {WRITER_ROLE}")
        conn.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {WRITER_ROLE}")
    host, port = server()
    yield {"host": host, "port": port, "database": CUSTOMER_DB, "user": CAPTURE_ROLE, "password": "capture-secret"}
    with admin_connect() as conn:
        _drop(conn)


def writer_connect(autocommit=True):
    host, port = server()
    return psycopg.connect(host=host, port=port, user=WRITER_ROLE, dbname=CUSTOMER_DB, autocommit=autocommit)


def customer_db_reset():
    """Back to the state the session started with: no Rowbell objects, empty tables."""
    with admin_connect(CUSTOMER_DB) as admin:
        admin.execute("DROP SCHEMA IF EXISTS rowbell CASCADE")
        admin.execute(f"CREATE SCHEMA rowbell AUTHORIZATION {CAPTURE_ROLE}")
        admin.execute("TRUNCATE public.orders, public.customers, public.order_tags RESTART IDENTITY CASCADE")


@pytest.fixture
def connection(customer_db, product):
    from apps.connections.models import Connection

    conn = Connection.objects.create(
        product=product,
        name="shop",
        host=customer_db["host"],
        port=customer_db["port"],
        database=customer_db["database"],
        user=customer_db["user"],
        password=customer_db["password"],
    )
    yield conn
    from apps.connections.customer import customer_sessions_close

    customer_sessions_close()
    customer_db_reset()


def poll(*, connection_id) -> int | None:
    """One poll of the connection's log: it reads everything committed before it (a batch ends at the
    poll's own snapshot), whatever else is open on the server."""
    from apps.connections.pickup import event_log_poll

    return event_log_poll(connection_id=connection_id)


@pytest.fixture
def operator(client):
    """A staff user of the Rowbell operators group, logged in."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from apps.dashboard.groups import OPERATORS

    user = get_user_model().objects.create_user("op", "op@example.com", "pw", is_staff=True)
    user.groups.add(Group.objects.get(name=OPERATORS))
    client.force_login(user)
    return client


def pickup_rewind(connection) -> None:
    """Back to a connection that has read nothing, as if the service database had lost every poll."""
    from apps.connections.models import NOTHING_CONSUMED, Connection

    Connection.objects.filter(id=connection.id).update(
        consumed_snapshot=NOTHING_CONSUMED, batch_snapshot="", cursor_xid=0, cursor_id=0
    )


NEIGHBOUR_DB = "rowbell_neighbour_test"


@pytest.fixture(scope="session")
def neighbour_db():
    """Another database of the same server, in which nothing is watched."""
    with admin_connect() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {NEIGHBOUR_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {NEIGHBOUR_DB}")
    yield NEIGHBOUR_DB
    with admin_connect() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {NEIGHBOUR_DB} WITH (FORCE)")


@pytest.fixture
def idle_neighbour(neighbour_db):
    """A session idle in a transaction that holds a transaction id, in another database of the same server:
    the oldest transaction of the whole server for as long as the test runs."""
    host, port = server()
    conn = psycopg.connect(host=host, port=port, user="postgres", dbname=neighbour_db)  # not autocommit
    xid = conn.execute("SELECT pg_current_xact_id()").fetchone()[0]
    yield xid
    conn.rollback()
    conn.close()


@pytest.fixture(params=["alone", "idle neighbour"])
def neighbours(request):
    """Runs a test twice: alone on the server, and beside an idle transaction in another database."""
    if request.param == "idle neighbour":
        request.getfixturevalue("idle_neighbour")
