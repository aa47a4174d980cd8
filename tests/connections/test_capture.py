import threading

import pytest

from apps.connections.capture import (
    Capture,
    CaptureMissingTable,
    captures_install,
    captures_installed,
    captures_prune,
    retired_drop_statements,
)
from apps.connections.customer import customer_connect
from apps.connections.models import Connection, Event
from apps.connections.pickup import event_log_poll
from apps.connections.services import connection_captures_install

from .conftest import CUSTOMER_DB, admin_connect, pickup_rewind, writer_connect

pytestmark = pytest.mark.django_db(transaction=True)

ORDERS = Capture(schema="public", table="orders", primary_key=("id",), operations=("insert", "update", "delete"))
ORDERS_STATUS = Capture(
    schema="public", table="orders", primary_key=("id",), operations=("update",), update_columns=("status",)
)


def _events(connection, capture=None):
    qs = Event.objects.filter(connection=connection)
    if capture:
        qs = qs.filter(capture=capture.name)
    return [(e.op, e.ids) for e in qs.order_by("xid", "source_id")]


def _poll_all(connection):
    while event_log_poll(connection_id=connection.id):
        pass


def test_install_is_one_idempotent_transaction_and_visible(connection):
    assert connection_captures_install(connection=connection, captures=[ORDERS, ORDERS_STATUS], actor="test")
    # Nothing in place changes again: no CREATE TRIGGER, whose lock would block the table's writers.
    assert connection_captures_install(connection=connection, captures=[ORDERS, ORDERS_STATUS], actor="test") == []
    with customer_connect(connection) as conn:
        installed = captures_installed(conn, schema="rowbell")
    assert sorted(installed) == sorted([ORDERS.name, ORDERS_STATUS.name])
    # insert, update, delete, and truncate (every row removed) for ORDERS; update for ORDERS_STATUS.
    assert len(installed[ORDERS.name]) == 4 and len(installed[ORDERS_STATUS.name]) == 1
    connection.refresh_from_db()
    assert connection.capture_installed_at is not None


def test_a_failing_install_leaves_nothing_behind(connection):
    broken = Capture(schema="public", table="no_such_table", primary_key=("id",), operations=("insert",))
    with customer_connect(connection) as conn:
        with pytest.raises(CaptureMissingTable):
            captures_install(conn, schema="rowbell", captures=[ORDERS, broken])
        assert captures_installed(conn, schema="rowbell") == {}
        assert conn.execute("SELECT to_regclass('rowbell.event_log')").fetchone()[0] is None


def test_row_changes_by_an_ungranted_writer_become_events_one_per_statement(connection):
    connection_captures_install(connection=connection, captures=[ORDERS], actor="test")
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status) SELECT 'new' FROM generate_series(1, 3)")
        app.execute("UPDATE public.orders SET status = 'paid' WHERE id = 2")
        app.execute("UPDATE public.orders SET status = 'x' WHERE id = 99")  # changes nothing: no event
        app.execute("DELETE FROM public.orders WHERE id IN (1, 3)")
    _poll_all(connection)
    assert _events(connection) == [("insert", [1, 2, 3]), ("update", [2]), ("delete", [1, 3])]


def test_updates_limited_to_columns_log_only_when_those_change(connection):
    connection_captures_install(connection=connection, captures=[ORDERS_STATUS], actor="test")
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status, total) VALUES ('new', 1), ('new', 2)")
        app.execute("UPDATE public.orders SET total = total + 1")  # status unchanged: nothing
        app.execute("UPDATE public.orders SET status = 'paid' WHERE id = 1")
        app.execute("UPDATE public.orders SET status = status")  # same value: nothing
    _poll_all(connection)
    assert _events(connection, ORDERS_STATUS) == [("update", [1])]


@pytest.mark.usefixtures("neighbours")
def test_no_event_is_skipped_when_transactions_commit_out_of_order(connection):
    connection_captures_install(connection=connection, captures=[ORDERS], actor="test")
    first = writer_connect(autocommit=False)
    second = writer_connect(autocommit=False)
    try:
        first.execute("INSERT INTO public.orders (status) VALUES ('first')")  # takes the lower event id
        second.execute("INSERT INTO public.orders (status) VALUES ('second')")  # the higher one
        second.commit()  # commits first, in reverse order of the ids
        event_log_poll(connection_id=connection.id)  # the poller runs in between
        first.commit()
    finally:
        first.close()
        second.close()
    _poll_all(connection)
    assert sorted(ids[0] for _, ids in _events(connection)) == [1, 2]


@pytest.mark.usefixtures("neighbours")
def test_events_that_accrued_while_stopped_are_all_read_once(connection):
    connection_captures_install(connection=connection, captures=[ORDERS], actor="test")
    with writer_connect() as app:
        for i in range(1000):
            app.execute("INSERT INTO public.orders (status) VALUES (%s)", [f"s{i}"])
    _poll_all(connection)
    _poll_all(connection)
    ids = [ids[0] for _, ids in _events(connection)]
    assert len(ids) == 1000 and sorted(ids) == list(range(1, 1001))


def test_reading_twice_records_once(connection):
    connection_captures_install(connection=connection, captures=[ORDERS], actor="test")
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status) VALUES ('a')")
    assert event_log_poll(connection_id=connection.id) == 1
    pickup_rewind(connection)  # as if the commit was lost
    assert event_log_poll(connection_id=connection.id) == 1
    assert Event.objects.filter(connection=connection).count() == 1


def test_only_one_poller_reads_a_connection_at_a_time(connection):
    connection_captures_install(connection=connection, captures=[ORDERS], actor="test")
    from django.db import connection as db
    from django.db import transaction

    held, release, result = threading.Event(), threading.Event(), {}

    def hold_lock():
        with transaction.atomic():
            Connection.objects.select_for_update().get(id=connection.id)
            held.set()
            release.wait(10)
        db.close()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    held.wait(10)
    result["second"] = event_log_poll(connection_id=connection.id)
    release.set()
    holder.join()
    assert result["second"] is None


def test_a_database_that_goes_away_is_reported_and_picked_up_again(connection):
    connection_captures_install(connection=connection, captures=[ORDERS], actor="test")
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status) VALUES ('a')")
    port = connection.port
    Connection.objects.filter(id=connection.id).update(port=1)
    assert event_log_poll(connection_id=connection.id) == 0
    connection.refresh_from_db()
    assert "Connection refused" in connection.last_error and connection.last_error_at is not None
    Connection.objects.filter(id=connection.id).update(port=port)
    assert event_log_poll(connection_id=connection.id) == 1
    connection.refresh_from_db()
    assert connection.last_error == ""


def test_prune_retires_what_no_capture_uses_and_it_logs_nothing_more(connection):
    connection_captures_install(connection=connection, captures=[ORDERS, ORDERS_STATUS], actor="test")
    with customer_connect(connection) as conn:
        retired = captures_prune(conn, schema="rowbell", keep=[ORDERS_STATUS])
        assert len(retired) == 4  # with the TRUNCATE trigger
        assert list(captures_installed(conn, schema="rowbell")) == [ORDERS_STATUS.name]
        drops = retired_drop_statements(conn, schema="rowbell")
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status) VALUES ('new')")
        app.execute("UPDATE public.orders SET status = 'paid'")
    _poll_all(connection)
    assert [capture for (capture,) in Event.objects.values_list("capture")] == [ORDERS_STATUS.name]
    # A table owner can remove the retired triggers for good with the statements given.
    with admin_connect(CUSTOMER_DB) as admin:
        for statement in drops:
            admin.execute(statement)
    with customer_connect(connection) as conn:
        assert retired_drop_statements(conn, schema="rowbell") == []


def test_health_shows_backlog_and_the_scheduled_poll_drains_it(connection, product_client):
    from apps.connections.services import event_logs_poll

    connection_captures_install(connection=connection, captures=[ORDERS], actor="test")
    with writer_connect() as app:
        for _ in range(3):
            app.execute("INSERT INTO public.orders (status) VALUES ('new')")
    health = product_client.get(f"/api/v1/connections/{connection.id}/health").json()
    assert health["capture_installed"] is True and health["reachable"] is True
    assert health["backlog"] == 3 and health["oldest_unread_age_seconds"] >= 0
    assert event_logs_poll() == 3
    health = product_client.get(f"/api/v1/connections/{connection.id}/health").json()
    assert health["backlog"] == 0 and health["last_poll_at"] is not None and health["last_error"] == ""


@pytest.mark.usefixtures("neighbours")  # the idle neighbour holds xmin back, not the prune
def test_retention_prunes_consumed_events_in_batches_and_never_unread_ones(connection):
    from apps.connections.pickup import event_log_prune

    connection_captures_install(connection=connection, captures=[ORDERS], actor="test")
    with writer_connect() as app:
        for _ in range(5):
            app.execute("INSERT INTO public.orders (status) VALUES ('a')")
    _poll_all(connection)
    with writer_connect() as app:
        app.execute("INSERT INTO public.orders (status) VALUES ('unread')")
    with admin_connect(CUSTOMER_DB) as admin:
        admin.execute("UPDATE rowbell.event_log SET captured_at = now() - interval '30 days'")
    connection.refresh_from_db()
    assert event_log_prune(connection=connection, older_than_seconds=86400, batch=2) == 5
    with admin_connect(CUSTOMER_DB) as admin:
        left = admin.execute("SELECT ids FROM rowbell.event_log").fetchall()
    assert left == [([6],)]  # old but not read yet: kept
    _poll_all(connection)
    assert Event.objects.filter(connection=connection).count() == 6


HIJACK = """
CREATE SCHEMA evil AUTHORIZATION {writer};
SET ROLE {writer};
GRANT USAGE ON SCHEMA evil TO PUBLIC;  -- so that Rowbell's user, running the trigger, would see it
CREATE FUNCTION evil.gt(bigint, integer) RETURNS boolean LANGUAGE plpgsql AS
    $$BEGIN RAISE EXCEPTION 'hijacked as %', current_user; END$$;
CREATE OPERATOR evil.> (LEFTARG = bigint, RIGHTARG = integer, FUNCTION = evil.gt);
CREATE FUNCTION evil.eq(text, text) RETURNS boolean LANGUAGE plpgsql AS
    $$BEGIN RAISE EXCEPTION 'hijacked as %', current_user; END$$;
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.eq);
CREATE FUNCTION evil.jsonb_agg(anyelement) RETURNS jsonb LANGUAGE plpgsql AS
    $$BEGIN RAISE EXCEPTION 'hijacked as %', current_user; END$$;
RESET ROLE;
"""


def test_a_writer_cannot_hijack_the_triggers_through_its_search_path(connection):
    """The trigger functions run as Rowbell's user (SECURITY DEFINER). A writer who puts its own schema
    before pg_catalog, with look-alike operators and functions, must not get its code run by them."""
    from .conftest import WRITER_ROLE

    connection_captures_install(connection=connection, captures=[ORDERS, ORDERS_STATUS], actor="test")
    with admin_connect(CUSTOMER_DB) as admin:
        admin.execute(HIJACK.format(writer=WRITER_ROLE))
    try:
        with writer_connect() as app:
            app.execute("SET search_path = evil, pg_catalog, public")
            app.execute("INSERT INTO public.orders (status) VALUES ('new')")  # plain capture: qualified names
            app.execute("UPDATE public.orders SET status = 'paid'")  # listed columns: pinned search_path
        _poll_all(connection)
        assert ("insert", [1]) in _events(connection) and ("update", [1]) in _events(connection, ORDERS_STATUS)
    finally:
        with admin_connect(CUSTOMER_DB) as admin:
            admin.execute("DROP SCHEMA evil CASCADE")
