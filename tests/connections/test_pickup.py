"""Pick-up in batches closed between two snapshots: nothing skipped, nothing repeated, nothing held back
by a transaction that wrote nothing to the log."""

import glob
import importlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from apps.connections.capture import Capture
from apps.connections.customer import customer_connect
from apps.connections.models import NOTHING_CONSUMED, Connection, Event
from apps.connections.pickup import BACKLOG_SQL, event_log_poll, poll_statement
from apps.connections.services import connection_captures_install
from tests.conftest import free_port

from .conftest import CAPTURE_ROLE, CUSTOMER_DB, WRITER_ROLE, admin_connect, writer_connect

pytestmark = pytest.mark.django_db(transaction=True)

ORDERS = Capture(schema="public", table="orders", primary_key=("id",), operations=("insert", "update", "delete"))
migration = importlib.import_module("apps.connections.migrations.0004_pickup_batches")


def _read(connection) -> list[int]:
    """The order ids of the recorded events, in the order they were read."""
    return [ids[0] for ids in Event.objects.filter(connection=connection).order_by("id").values_list("ids", flat=True)]


def _insert(app, status="new", count=1):
    for _ in range(count):
        app.execute("INSERT INTO public.orders (status) VALUES (%s)", [status])


def test_an_idle_transaction_in_another_database_holds_back_nothing(connection, idle_neighbour, product_client):
    connection_captures_install(connection=connection, captures=[ORDERS], actor="test")
    with admin_connect(CUSTOMER_DB) as admin:  # the neighbour is the oldest transaction of the whole server
        xmin = admin.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text").fetchone()[0]
    assert int(xmin) <= int(str(idle_neighbour))
    with writer_connect() as app:
        _insert(app)
    assert event_log_poll(connection_id=connection.id) == 1
    assert _read(connection) == [1]
    health = product_client.get(f"/api/v1/connections/{connection.id}/health").json()
    assert health["backlog"] == 0 and health["held_back_by"] == []  # it wrote nothing to the log


def test_an_open_transaction_that_wrote_is_reported_and_read_when_it_commits(connection, product_client):
    connection_captures_install(connection=connection, captures=[ORDERS], actor="test")
    open_writer = writer_connect(autocommit=False)
    rowbell_session = customer_connect(connection, autocommit=False)  # Rowbell's own sessions are not reported
    try:
        _insert(open_writer, "open")
        rowbell_session.execute("DELETE FROM rowbell.event_log WHERE false")
        with writer_connect() as app:
            _insert(app, "committed")
        assert event_log_poll(connection_id=connection.id) == 1  # the committed change does not wait
        health = product_client.get(f"/api/v1/connections/{connection.id}/health").json()
        assert health["backlog"] == 0  # an uncommitted event is not there yet
        assert [h["pid"] for h in health["held_back_by"]] == [open_writer.info.backend_pid]
        # Another role's session, seen by Rowbell's role without pg_read_all_stats: who, not since when.
        assert health["held_back_by"][0] | {"pid": 0} == {
            "pid": 0,
            "user": WRITER_ROLE,
            "application_name": "",
            "state": None,
            "xact_start": None,
            "seconds_open": None,
        }
        open_writer.commit()
    finally:
        open_writer.close()
        rowbell_session.close()
    assert event_log_poll(connection_id=connection.id) == 1
    assert _read(connection) == [2, 1]
    health = product_client.get(f"/api/v1/connections/{connection.id}/health").json()
    assert health["held_back_by"] == [] and health["backlog"] == 0


def test_how_long_a_writer_has_been_open_shows_to_a_role_that_may_read_all_stats(connection, product_client):
    connection_captures_install(connection=connection, captures=[ORDERS], actor="test")
    open_writer = writer_connect(autocommit=False)
    with admin_connect() as admin:
        admin.execute(f"GRANT pg_read_all_stats TO {CAPTURE_ROLE}")
    try:
        _insert(open_writer, "open")
        held = product_client.get(f"/api/v1/connections/{connection.id}/health").json()["held_back_by"]
        assert len(held) == 1 and held[0]["state"] == "idle in transaction"
        assert held[0]["xact_start"] is not None and held[0]["seconds_open"] >= 0
    finally:
        open_writer.close()
        with admin_connect() as admin:
            admin.execute(f"REVOKE pg_read_all_stats FROM {CAPTURE_ROLE}")


@pytest.fixture(scope="module")
def prepared_server():
    """A private throwaway PostgreSQL that allows prepared transactions (the shared server, as PostgreSQL
    ships, allows none): its port. Run as the postgres user, as initdb refuses root."""
    bindir = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
    # Not under pytest's temporary root, which only root may enter.
    data = Path(tempfile.mkdtemp(prefix="rowbell-pg-")) / "data"
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        shutil.chown(data.parent, "postgres")
    port = free_port()
    subprocess.run(
        as_postgres + [f"{bindir}/initdb", "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {data.parent} -c listen_addresses=127.0.0.1 -c max_prepared_transactions=4 -c fsync=off"
    subprocess.run(
        as_postgres
        + [f"{bindir}/pg_ctl", "-D", str(data), "-o", options, "-w", "-l", str(data.parent / "log"), "start"],
        check=True,
        capture_output=True,
    )
    yield port
    subprocess.run(as_postgres + [f"{bindir}/pg_ctl", "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
    shutil.rmtree(data.parent, ignore_errors=True)


def test_a_prepared_transaction_that_wrote_is_reported_and_read_when_committed(prepared_server, product):
    from django.utils import timezone

    from apps.connections.capture import captures_install
    from apps.connections.pickup import connection_health

    dsn = {"host": "127.0.0.1", "port": prepared_server, "user": "postgres", "dbname": "postgres"}
    with psycopg.connect(**dsn, autocommit=True) as admin:
        admin.execute("DROP TABLE IF EXISTS public.orders; DROP SCHEMA IF EXISTS rowbell CASCADE")
        admin.execute("CREATE TABLE public.orders (id bigserial PRIMARY KEY, status text)")
        captures_install(admin, schema="rowbell", captures=[ORDERS])
    connection = Connection.objects.create(
        product=product,
        name="prepared",
        host="127.0.0.1",
        port=prepared_server,
        database="postgres",
        user="postgres",
        capture_installed_at=timezone.now(),
    )
    app = psycopg.connect(**dsn, application_name="shop")
    _insert(app, "prepared")
    app.execute("PREPARE TRANSACTION 'rowbell_test_prepared'")
    app.close()  # a prepared transaction outlives its session
    try:
        held = connection_health(connection=connection)["held_back_by"]
        assert [(h["pid"], h["user"], h["state"]) for h in held] == [(None, "postgres", "prepared")]
        assert held[0]["seconds_open"] >= 0
        assert event_log_poll(connection_id=connection.id) == 0
    finally:
        with psycopg.connect(**dsn, autocommit=True) as admin:
            admin.execute("COMMIT PREPARED 'rowbell_test_prepared'")
    assert event_log_poll(connection_id=connection.id) == 1
    assert connection_health(connection=connection)["held_back_by"] == []


def test_a_batch_longer_than_a_page_is_read_over_several_polls_once(connection):
    connection_captures_install(connection=connection, captures=[ORDERS], actor="test")
    long = writer_connect(autocommit=False)
    try:
        _insert(long, "long")  # order 1, in progress while the first batch is read
        with writer_connect() as app:
            _insert(app, "batch", 25)  # orders 2-26
        assert event_log_poll(connection_id=connection.id, limit=10) == 10
        connection.refresh_from_db()
        assert connection.batch_snapshot and (connection.cursor_xid, connection.cursor_id) != (0, 0)
        long.commit()  # commits while the batch is read: it belongs to the next one
    finally:
        long.close()
    with writer_connect() as app:
        _insert(app, "late", 3)  # orders 27-29, the next batch too
    assert event_log_poll(connection_id=connection.id, limit=10) == 10
    assert event_log_poll(connection_id=connection.id, limit=10) == 5
    connection.refresh_from_db()
    assert (connection.batch_snapshot, connection.cursor_xid, connection.cursor_id) == ("", 0, 0)
    assert event_log_poll(connection_id=connection.id, limit=10) == 4
    assert event_log_poll(connection_id=connection.id, limit=10) == 0
    assert _read(connection) == list(range(2, 27)) + [1, 27, 28, 29]


def test_the_old_cursor_converts_to_a_state_that_neither_skips_nor_repeats(connection):
    connection_captures_install(connection=connection, captures=[ORDERS], actor="test")
    with writer_connect(autocommit=False) as app:
        for _ in range(3):  # three transactions of two events each
            _insert(app, "a", 2)
            app.commit()
    with admin_connect(CUSTOMER_DB) as admin:
        log = admin.execute("SELECT xid::text, id FROM rowbell.event_log ORDER BY xid, id").fetchall()
    xid, id_ = log[2]  # the old poller had read up to the first event of the second transaction
    Connection.objects.filter(id=connection.id).update(**migration.pickup_state_from_cursor(int(xid), id_))
    while event_log_poll(connection_id=connection.id):
        pass
    assert list(Event.objects.order_by("id").values_list("source_id", flat=True)) == [i for _, i in log[3:]]


def test_the_conversion_of_the_old_cursor():
    assert migration.pickup_state_from_cursor(0, 0) == {
        "consumed_snapshot": NOTHING_CONSUMED,
        "batch_snapshot": "",
        "cursor_xid": 0,
        "cursor_id": 0,
    }
    state = migration.pickup_state_from_cursor(7406, 52)
    assert state == {"consumed_snapshot": "7406:7406:", "batch_snapshot": "", "cursor_xid": 7406, "cursor_id": 52}
    # Backwards: exact while the state has not moved; afterwards, read again below xmin rather than skip.
    assert migration.cursor_from_pickup_state("7406:7406:", 7406, 52) == {"cursor_xid": 7406, "cursor_id": 52}
    assert migration.cursor_from_pickup_state("7410:7415:7410,7412", 0, 0) == {
        "cursor_xid": 7409,
        "cursor_id": 2**63 - 1,
    }
    assert migration.cursor_from_pickup_state(NOTHING_CONSUMED, 0, 0) == {"cursor_xid": 0, "cursor_id": 0}


def _scans(plan: dict):
    if plan.get("Relation Name") == "event_log":
        yield plan
    for child in plan.get("Plans", []):
        yield from _scans(child)


def test_a_page_reads_the_log_by_its_key_never_from_its_start(connection, idle_neighbour):
    """50,000 consumed events, the server's xmin held far behind them by an idle neighbour, and a
    transaction in progress at the consumed snapshot: a page touches only the events it returns."""
    connection_captures_install(connection=connection, captures=[ORDERS], actor="test")
    with admin_connect(CUSTOMER_DB) as admin:
        for _ in range(50):
            admin.execute(
                "INSERT INTO rowbell.event_log (capture, table_name, op, ids) SELECT 'old', "
                "'public.orders', 'insert', jsonb_build_array(g) FROM generate_series(1, 1000) g"
            )
        long = writer_connect(autocommit=False)
        try:
            _insert(long, "long")
            admin.execute("SELECT pg_current_xact_id()")  # a later transaction ends: the long one is in xip
            consumed = admin.execute("SELECT pg_current_snapshot()::text").fetchone()[0]
            long.commit()
        finally:
            long.close()
        admin.execute("ANALYZE rowbell.event_log")
    with writer_connect() as app:
        _insert(app, "new", 3)
    Connection.objects.filter(id=connection.id).update(consumed_snapshot=consumed)
    connection.refresh_from_db()

    statement, params = poll_statement(connection)
    backlog = sql.SQL(BACKLOG_SQL).format(log=sql.Identifier("rowbell", "event_log"))
    with customer_connect(connection) as conn:
        assert conn.execute("SHOW enable_seqscan").fetchone()[0] == "on"
        for query in (statement, backlog):
            plan = conn.execute(sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ") + query, params).fetchone()[0][0]["Plan"]
            scans = list(_scans(plan))
            assert len(scans) == 2, scans  # the in-progress list, and the range after it
            for scan in scans:
                assert scan["Node Type"] in ("Index Scan", "Index Only Scan", "Bitmap Heap Scan"), scan
                assert scan.get("Index Name", "event_log_pkey") == "event_log_pkey"
            touched = sum(
                (
                    scan["Actual Rows"]
                    + scan.get("Rows Removed by Filter", 0)
                    + scan.get("Rows Removed by Index Recheck", 0)
                )
                * scan["Actual Loops"]
                for scan in scans
            )
            assert touched == 4, plan
    assert event_log_poll(connection_id=connection.id) == 4
    assert _read(connection) == [1, 2, 3, 4]
