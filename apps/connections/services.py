from __future__ import annotations

import logging
import re

import psycopg
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.core.actions import action_request
from apps.core.exceptions import ApplicationError, Conflict, InvalidInput

from .capture import (
    Capture,
    CaptureConflict,
    CaptureMissingTable,
    captures_install,
    captures_installed,
    captures_prune,
    installation_claim,
    installation_owner,
    installation_release,
    retired_drop_statements,
)
from .checks import Check, connection_check, grant_statement, table_privileges_check
from .consumers import capture_uses
from .customer import ConnectionRefused, connection_address, customer_connect, failure_reason
from .drift import captures_drift, error_problems
from .models import Connection
from .names import table_parse
from .related import related_drift

logger = logging.getLogger(__name__)

IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class ConnectionCheckFailed(ApplicationError):
    """The database could not be used as given; `checks` says which check failed and why."""

    code = "connection_check_failed"
    http_status = 422

    def __init__(self, checks: list[Check]):
        failed = [c.name for c in checks if not c.ok]
        super().__init__(f"Connection checks failed: {', '.join(failed)}.")
        self.checks = checks

    def extra(self) -> dict:
        return {"checks": [c.as_dict() for c in self.checks]}


class CustomerDatabaseUnavailable(ApplicationError):
    code = "customer_database_unavailable"
    http_status = 502

    @classmethod
    def from_error(cls, exc: Exception) -> CustomerDatabaseUnavailable:
        return cls(f"The database cannot be reached: {failure_reason(exc)}")


class CaptureInstallFailed(ApplicationError):
    code = "capture_install_failed"
    http_status = 422


def _validate(*, schema: str, tables: list[str]) -> None:
    if not IDENTIFIER.match(schema):
        raise InvalidInput("A lower-case identifier: letters, digits and '_', at most 63.", field="schema")
    for index, table in enumerate(tables):
        try:
            table_parse(table)
        except ValueError as exc:
            raise InvalidInput(str(exc), field=f"tables[{index}]") from None


def connection_create(
    *,
    product,
    name: str,
    host: str,
    port: int,
    database: str,
    user: str,
    password: str,
    sslmode: str,
    schema: str = "rowbell",
    tables: list[str] | None = None,
    actor: str,
) -> tuple[Connection, list[Check]]:
    """Check a customer database and save the connection only if every check passes.

    Raises ConnectionCheckFailed (with the itemized checks) and saves nothing otherwise.
    """
    tables = list(tables or [])
    _validate(schema=schema, tables=tables)
    connection = Connection(
        product=product,
        name=name,
        host=host,
        port=port,
        database=database,
        user=user,
        password=password,
        sslmode=sslmode,
        schema=schema,
    )
    checks = connection_check(connection=connection, tables=tables)
    if not all(c.ok for c in checks):
        raise ConnectionCheckFailed(checks)
    try:
        connection_claim(connection=connection, creating=True)
    except psycopg.OperationalError as exc:
        raise CustomerDatabaseUnavailable.from_error(exc) from exc
    except psycopg.Error as exc:
        raise CaptureInstallFailed(f"The database refused Rowbell's schema: {failure_reason(exc)}") from exc
    try:
        with transaction.atomic():
            connection.save()
            audit_record(
                action="connection.created",
                target_type="connection",
                target_id=connection.id,
                product_id=product.id,
                actor=actor,
                data={"name": name, "host": host, "port": port, "database": database, "user": user, "schema": schema},
            )
    except IntegrityError:
        holder = Connection.objects.filter(product=product, name=name).values_list("id", flat=True).first()
        raise Conflict(
            f"A connection named '{name}' already exists"
            + (f" ({holder}): use it, or DELETE /api/v1/connections/{holder} first" if holder else "")
            + "; or choose another name.",
            field="name",
        ) from None
    return connection, checks


def connection_claim(*, connection: Connection, creating: bool = False) -> None:
    """Make `connection` the one Rowbell connection of its database and schema, or refuse.

    Two connections to one schema would each call the other's triggers unused, and a prune by one would
    retire what the other's subscriptions need: the schema records its owner (capture.installation_claim).
    A schema owned by a live connection is refused with a Conflict naming it (or, for another product's,
    saying only that one exists); one whose owner was deleted is taken over. Logs installed before owners
    were recorded are matched by address, port, database and schema when a connection is created (a saved
    one claims such a schema: the first wins). Raises psycopg.Error if the database cannot be used.
    """
    with customer_connect(connection) as conn:
        owner, has_log = installation_owner(conn, schema=connection.schema)
        if owner == str(connection.id):
            return
        other = Connection.objects.filter(id=owner).first() if owner else None
        if other is None and has_log and not owner and creating:
            other = _same_database(connection)
        if other is not None:
            where = f"schema {connection.schema} of {connection.database}"
            if other.product_id == connection.product_id:
                raise Conflict(
                    f"Connection '{other.name}' ({other.id}) already watches {where}: use it, or choose "
                    "another schema.",
                    field="schema",
                )
            raise Conflict(f"Another Rowbell product already watches {where}: choose another schema.", field="schema")
        installation_claim(
            conn, schema=connection.schema, connection_id=connection.id, product_id=connection.product_id
        )


def _same_database(connection: Connection) -> Connection | None:
    try:
        address = connection_address(connection)
    except ConnectionRefused:
        return None
    for other in Connection.objects.filter(
        database=connection.database, port=connection.port, schema=connection.schema
    ).exclude(id=connection.id):
        try:
            if connection_address(other) == address:
                return other
        except ConnectionRefused:
            continue
    return None


def connection_delete(*, connection: Connection, actor: str) -> dict:
    """Delete a connection: refused (Conflict) while an enabled endpoint or a published workflow uses it,
    naming them; otherwise its triggers are retired in the customer database (only its own: its schema
    has no other owner), its ownership of the schema released, and the row marked deleted (events, runs and
    deliveries stay readable). Raises CustomerDatabaseUnavailable if the database cannot be reached: nothing
    is deleted then, as its triggers would go on logging."""
    users = connection_capture_users(connection=connection)
    workflows = sorted({w for u in users.values() for w in u["workflows"]})
    endpoints = sorted({e for u in users.values() for e in u["endpoints"]})
    if workflows or endpoints:
        raise Conflict(
            "The connection is in use: "
            + ", ".join([f"workflow {w}" for w in workflows] + [f"endpoint {e}" for e in endpoints])
            + ". Unpublish those workflows and disable those endpoints first."
        )
    with transaction.atomic():
        locked = Connection.objects.select_for_update().filter(id=connection.id).first()
        if locked is None:
            return {"retired": []}
        retired = []
        if locked.capture_installed_at is not None:
            try:
                retired = connection_captures_prune(connection=locked, keep_none=True, actor=actor)
            except psycopg.OperationalError as exc:
                raise CustomerDatabaseUnavailable.from_error(exc) from exc
        try:
            with customer_connect(locked) as conn:
                installation_release(conn, schema=locked.schema, connection_id=locked.id)
        except psycopg.OperationalError as exc:
            raise CustomerDatabaseUnavailable.from_error(exc) from exc
        Connection.objects.filter(id=locked.id).update(deleted_at=timezone.now(), capture_installed_at=None)
        audit_record(
            action="connection.deleted",
            target_type="connection",
            target_id=locked.id,
            product_id=locked.product_id,
            actor=actor,
            data={"retired": retired},
        )
    return {"retired": retired}


def connection_delete_request(*, connection: Connection, actor: str) -> None:
    """Queue deleting a connection (the admin): it reaches the customer database to retire triggers."""
    _request(connection, "connection.delete", actor)


def connection_delete_queued(*, connection_id, actor: str) -> dict:
    """connection_delete as queued by an operator."""
    connection = Connection.objects.filter(id=connection_id).first()
    if connection is None:
        return {"retired": []}
    return connection_delete(connection=connection, actor=actor)


def connection_recheck(*, connection: Connection, tables: list[str] | None = None, actor: str) -> list[Check]:
    """Run the checks again on a saved connection (nothing is changed) and audit the outcome: the connection,
    every watched table (privileges, on each partition too) besides those asked for, and each capture
    against the table as it is now (a column a migration renamed, a trigger missing)."""
    tables = list(tables or [])
    _validate(schema=connection.schema, tables=tables)
    wanted = connection_captures_wanted(connection=connection)
    watched = sorted({c.qualified_table for c in wanted} - set(tables))
    checks = connection_check(connection=connection, tables=tables + watched)
    if all(c.ok for c in checks) and wanted:
        users = connection_capture_users(connection=connection)
        try:
            problems = connection_drift(connection=connection, wanted=wanted, users=users)
        except psycopg.Error as exc:
            problems = [{"capture": "", "table": "", "detail": failure_reason(exc), "workflows": [], "endpoints": []}]
        by_capture: dict[str, list[dict]] = {}
        for problem in problems:
            by_capture.setdefault(problem["capture"], []).append(problem)
        for capture in wanted:
            found = by_capture.get(capture.name, [])
            used = users.get(capture.name, {})
            by = (
                ", ".join(
                    [f"workflow {w}" for w in used.get("workflows", [])]
                    + [f"endpoint {e}" for e in used.get("endpoints", [])]
                )
                or "nothing live"
            )
            checks.append(
                Check(
                    f"capture {capture.name}",
                    not found,
                    " ".join(p["detail"] for p in found) + f" Used by {by}."
                    if found
                    else f"{capture.reported_table or capture.qualified_table}: in order (used by {by}).",
                )
            )
    audit_record(
        action="connection.checked",
        target_type="connection",
        target_id=connection.id,
        product_id=connection.product_id,
        actor=actor,
        data={"ok": all(c.ok for c in checks), "failed": [c.name for c in checks if not c.ok]},
    )
    return checks


def connection_captures_install(
    *, connection: Connection, captures: list, actor: str, each: bool = False, enable: bool = True
) -> list[str]:
    """Install (or repair) the event log and the given captures in the customer database, then record it;
    return what had to change (empty when all was in place). All in one transaction, or with `each` one per
    capture, the ones that failed listed as "failed <capture>: <reason>" (see capture.captures_install).
    Raises CustomerDatabaseUnavailable if the database cannot be reached, CaptureInstallFailed if it refused."""
    try:
        connection_claim(connection=connection)
        with customer_connect(connection, autocommit=True) as conn:
            changed = captures_install(conn, schema=connection.schema, captures=captures, each=each, enable=enable)
    except (CaptureConflict, CaptureMissingTable) as exc:
        raise CaptureInstallFailed(str(exc)) from exc
    except psycopg.errors.LockNotAvailable as exc:
        raise CaptureInstallFailed(
            "A table to watch is locked by a long-running transaction: the install gave up rather than make "
            "your writers wait behind it. Try again once that transaction has ended."
        ) from exc
    except psycopg.errors.InsufficientPrivilege as exc:
        raise CaptureInstallFailed(
            f"The database refused the install: {failure_reason(exc)}. {_grant_hint(connection, captures)}"
        ) from exc
    except psycopg.OperationalError as exc:
        raise CustomerDatabaseUnavailable.from_error(exc) from exc
    except psycopg.Error as exc:
        # Rolled back whole (one transaction): the database refused it.
        raise CaptureInstallFailed(f"The database refused the install: {failure_reason(exc)}") from exc
    if not changed and actor == "rowbell":  # the health tick found everything in place: nothing to record
        return changed
    with transaction.atomic():
        Connection.objects.filter(id=connection.id).update(capture_installed_at=timezone.now())
        audit_record(
            action="connection.captures_installed",
            target_type="connection",
            target_id=connection.id,
            product_id=connection.product_id,
            actor=actor,
            data={
                "captures": [
                    {"name": c.name, "table": c.qualified_table, "operations": list(c.operations)} for c in captures
                ],
                "changed": changed[:100],
            },
        )
    return changed


def _grant_hint(connection: Connection, captures: list) -> str:
    """The GRANTs that give the connection's user what installing `captures` needs: on each watched table
    and partition that lacks one (see checks.table_privileges_check)."""
    try:
        with customer_connect(connection) as conn:
            details = [
                table_privileges_check(conn, schema=c.schema, table=c.table, name=c.qualified_table)
                for c in {(c.schema, c.table): c for c in captures}.values()
            ]
    except psycopg.Error:
        details = []
    missing = [c.detail for c in details if not c.ok]
    if missing:
        return " ".join(missing)
    tables = sorted({(c.schema, c.table) for c in captures})
    return f"Run: {grant_statement(['SELECT', 'TRIGGER'], tables, connection.user)}" if tables else ""


def event_logs_poll() -> int:
    """Read new events from every connection with captures installed; return how many were read.

    Each connection is polled under its own lock (a second poller skips it), until its log is drained
    or the pass reaches its limit.
    """
    from .pickup import POLL_BATCH, event_log_poll

    total = 0
    for connection_id in Connection.objects.filter(capture_installed_at__isnull=False).values_list("id", flat=True):
        for _ in range(10):
            read = event_log_poll(connection_id=connection_id)
            total += read or 0
            if not read or read < POLL_BATCH:
                break
    return total


def connection_captures_wanted(*, connection: Connection) -> list:
    """The captures the connection's enabled subscriptions and published workflows need (deduplicated
    by name)."""
    # Oldest first, so that when two sources of one capture were saved with different column types (before
    # and after a migration) the newest one's wins, the same way at every tick.
    captures = {}
    for use in capture_uses(connection=connection):
        if use.spec is not None:
            capture = Capture.from_spec(use.spec)
            captures[capture.name] = capture
    return list(captures.values())


def connection_captures_status(*, connection: Connection) -> dict:
    """What should be installed against what is: missing (drift) and unused captures, by name."""
    wanted = {c.name: c for c in connection_captures_wanted(connection=connection)}
    with customer_connect(connection) as conn:
        installed = captures_installed(conn, schema=connection.schema)
        retired = retired_drop_statements(conn, schema=connection.schema)
    return {
        "wanted": sorted(wanted),
        "installed": sorted(installed),
        "missing": sorted(set(wanted) - set(installed)),
        "unused": sorted(set(installed) - set(wanted)),
        "retired_drop_statements": retired,
    }


def connection_captures_prune(*, connection: Connection, keep_none: bool = False, actor: str) -> list[str]:
    """Retire the triggers no enabled subscription uses (all of them with keep_none); audit it.

    Holds the connection's row lock, like every install, so that a subscription being created or enabled
    meanwhile is either seen as wanted or installs its trigger after this prune, never in between.
    """
    with transaction.atomic():
        Connection.objects.select_for_update().filter(id=connection.id).first()
        connection_claim(connection=connection)  # never retire another connection's triggers
        keep = [] if keep_none else connection_captures_wanted(connection=connection)
        with customer_connect(connection) as conn:
            retired = captures_prune(conn, schema=connection.schema, keep=keep)
        if retired:
            audit_record(
                action="connection.captures_retired",
                target_type="connection",
                target_id=connection.id,
                product_id=connection.product_id,
                actor=actor,
                data={"retired": retired},
            )
    return retired


def event_logs_prune() -> int:
    """Prune consumed events older than ROWBELL_EVENT_LOG_RETENTION_SECONDS from every customer log."""
    from .pickup import event_log_prune

    total = 0
    for connection in Connection.objects.filter(capture_installed_at__isnull=False):
        try:
            total += event_log_prune(
                connection=connection, older_than_seconds=settings.ROWBELL_EVENT_LOG_RETENTION_SECONDS
            )
        except psycopg.Error:
            logger.warning("Cannot prune the event log of %s", connection.id, exc_info=True)
    return total


# --- Operators' actions (the admin enqueues them: they talk to the customer database) -------------


def connection_check_request(*, connection: Connection, actor: str) -> None:
    """Queue a full check of the connection ("check now"); the outcome lands on the connection."""
    _request(connection, "connection.check", actor)


def _request(connection: Connection, name: str, actor: str) -> None:
    action_request(
        name=name,
        target_type="connection",
        target_id=connection.id,
        args={"connection_id": str(connection.id)},
        actor=actor,
        product_id=connection.product_id,
    )


def connection_check_now(*, connection_id, actor: str) -> dict | None:
    """Check the connection (the same checks as on creation), read its backlog and lag, and compare the
    triggers installed with those wanted (drift); store it all on the connection and return it."""
    from .pickup import connection_health

    connection = Connection.objects.filter(id=connection_id).first()
    if connection is None:
        return None
    checks = connection_recheck(connection=connection, actor=actor)
    health = connection_health(connection=connection)
    try:
        captures = connection_captures_status(connection=connection)
        captures.pop("retired_drop_statements", None)
    except psycopg.Error as exc:
        captures = {"error": failure_reason(exc)}
    connection.refresh_from_db()
    connection_drift_record(connection=connection)
    report = {
        "checks": [c.as_dict() for c in checks],
        "ok": all(c.ok for c in checks),
        "reachable": health["reachable"],
        "captures": captures,
    }
    _health_store(connection, health, report=report)
    return report


def _health_store(connection: Connection, health: dict, *, report: dict | None = None) -> None:
    fields = {
        "health_checked_at": timezone.now(),
        "backlog": health["backlog"],
        "lag_seconds": health["oldest_unread_age_seconds"],
    }
    if report is not None:
        fields["check_report"] = report
    if health["reachable"] is False and health["last_error"] and not connection.last_error:
        fields.update(last_error=health["last_error"], last_error_at=timezone.now())
    Connection.objects.filter(id=connection.id).update(**fields)


def connections_health_refresh() -> int:
    """The health tick (beat, every ROWBELL_HEALTH_INTERVAL): for every capturing connection, read its backlog
    and lag, install what its wanted captures lack (a partition created since, a trigger dropped, functions
    from an older Rowbell: repeat-safe, and it takes no lock when all is in place), then look for drift and
    tell operators when it appears (see connection_drift_record). Pages show the stored figures without
    reaching into customer databases. Returns how many connections were read."""
    from .pickup import connection_health

    read = 0
    for connection in Connection.objects.filter(capture_installed_at__isnull=False):
        _health_store(connection, connection_health(connection=connection))
        try:
            connection_captures_reconcile(connection_id=connection.id)
        except Exception:  # one connection's failure must not stop the others' health
            logger.exception("Cannot check the captures of connection %s", connection.id)
        read += 1
    return read


def connection_captures_reconcile(*, connection_id) -> list[dict]:
    """Install the wanted captures where anything is missing, then record the drift that remains (problems,
    as drift.py describes them). A connection another process holds is skipped (its next tick comes)."""
    with transaction.atomic():
        connection = Connection.objects.select_for_update(skip_locked=True).filter(id=connection_id).first()
        if connection is None:
            return []
        wanted = connection_captures_wanted(connection=connection)
        failures = []
        if wanted:
            try:
                # One capture that cannot be installed must not keep the others (a new partition) from it;
                # a trigger someone disabled is reported, not re-enabled behind their back.
                changed = connection_captures_install(
                    connection=connection, captures=wanted, actor="rowbell", each=True, enable=False
                )
                failures = [c.removeprefix("failed ") for c in changed if c.startswith("failed ")]
                if changed:
                    logger.info("Re-installed on connection %s: %s", connection.id, ", ".join(changed[:20]))
            except ApplicationError as exc:
                failures = [exc.message]
        return connection_drift_record(connection=connection, install_failures=failures)


def connection_drift(*, connection: Connection, wanted: list | None = None, users: dict | None = None) -> list[dict]:
    """The connection's drift, read now (see drift.py), each problem naming the workflows and endpoints that
    use the capture. `wanted` and `users` (connection_capture_users) may be given when the caller has them.
    Raises psycopg.Error if the database cannot be read."""
    wanted = connection_captures_wanted(connection=connection) if wanted is None else wanted
    related: dict[tuple[str, str], list[str]] = {}
    columns: dict[tuple[str, str], list[str]] = {}
    for use in capture_uses(connection=connection):
        for table in use.related:
            related.setdefault(table, []).append(use.label)
        for column in use.columns:
            columns.setdefault(column, []).append(use.label)
    with customer_connect(connection) as conn:
        problems = captures_drift(conn, schema=connection.schema, captures=wanted)
        found = (
            related_drift(conn, connection=connection, tables=related, columns=columns) if related or columns else []
        )
    problems += error_problems(connection, {c.name for c in wanted})
    users = connection_capture_users(connection=connection) if users is None else users
    for problem in problems:
        problem.update(users.get(problem["capture"], {"workflows": [], "endpoints": []}))
    return problems + found


def connection_capture_users(*, connection: Connection) -> dict[str, dict]:
    """{capture name: {"workflows": [key, ...], "endpoints": [id, ...]}} of what is live on the connection."""
    users: dict[str, dict] = {}
    for use in capture_uses(connection=connection):
        if use.capture:
            users.setdefault(use.capture, {"workflows": [], "endpoints": []})[use.kind].append(use.label)
    return users


def _problem_key(problem: dict) -> tuple:
    # What a problem is, not when it was last seen: a trigger failing at every write is one problem.
    return (problem["capture"], problem["kind"], problem.get("key") or problem["detail"])


def connection_drift_record(*, connection: Connection, install_failures: list[str] | None = None) -> list[dict]:
    """Read the drift, store it on the connection, and when it changes tell operators once: an audit row and
    an email to ADMINS naming the tables, the problems and the workflows and endpoints affected; an audit row
    again when it is gone. `install_failures` are what the last install could not do (None: no install was
    tried now, the ones stored stand). Serialized on the connection's row, so two checks never both notify."""
    try:
        problems = connection_drift(connection=connection)
    except psycopg.Error as exc:
        logger.warning("Cannot read the drift of connection %s: %s", connection.id, failure_reason(exc))
        return list(connection.capture_problems or [])
    with transaction.atomic():
        locked = Connection.objects.select_for_update().filter(id=connection.id).first()
        if locked is None:
            return problems
        before = list(locked.capture_problems or [])
        if install_failures is None:
            problems += [p for p in before if p["kind"] == "install_failed"]
        else:
            problems += [
                {
                    "capture": "",
                    "table": "",
                    "kind": "install_failed",
                    "detail": failure,
                    "key": failure.split(":", 1)[0],
                    "repairable": False,
                    "workflows": [],
                    "endpoints": [],
                }
                for failure in install_failures
            ]
        known = {_problem_key(p) for p in before}
        if sorted(map(_problem_key, problems)) == sorted(known):
            if problems != before:  # the same problems, seen again: their details (last seen) refreshed
                Connection.objects.filter(id=connection.id).update(capture_problems=problems)
            connection.capture_problems = problems
            return problems
        now = timezone.now()
        Connection.objects.filter(id=connection.id).update(
            capture_problems=problems,
            capture_problems_since=(locked.capture_problems_since or now)
            if problems and before
            else (now if problems else None),
        )
        new = [p for p in problems if _problem_key(p) not in known]
        if new:
            audit_record(
                action="connection.capture_drift",
                target_type="connection",
                target_id=connection.id,
                product_id=connection.product_id,
                actor="rowbell",
                data={"problems": new[:50]},
            )
            transaction.on_commit(lambda: _drift_notify(connection, new), robust=True)  # never raises after commit
        elif not problems:
            audit_record(
                action="connection.capture_drift_resolved",
                target_type="connection",
                target_id=connection.id,
                product_id=connection.product_id,
                actor="rowbell",
                data={"resolved": len(before)},
            )
    connection.capture_problems = problems
    return problems


def _drift_notify(connection: Connection, problems: list[dict]) -> None:
    from django.core.mail import mail_admins

    if not settings.ADMINS:
        return
    lines = [
        f"Rowbell: the captures of connection {connection.name} ({connection.id}, product "
        f"{connection.product_id}) no longer match the database. Writes still succeed; changes may go "
        "unreported until this is fixed.",
        "",
    ]
    for p in problems[:50]:
        users = (
            ", ".join(
                [f"workflow {w}" for w in p.get("workflows", [])] + [f"endpoint {e}" for e in p.get("endpoints", [])]
            )
            or "nothing live"
        )
        lines.append(f"- {p['table']}: {p['detail']} Affects: {users}.")
    lines += [
        "",
        "Correct the source of each workflow or endpoint (or undo the migration), then repair the "
        "triggers: the admin's Connections page, action 'Repair triggers', or `manage.py triggers install`.",
    ]
    try:
        mail_admins(f"Capture drift on {connection.name}", "\n".join(lines), fail_silently=False)
    except Exception:  # the audit row and the admin still show it; the next change of drift mails again
        logger.exception("Cannot mail operators about the drift of connection %s", connection.id)


def connection_repair_request(*, connection: Connection, actor: str) -> None:
    """Queue a repair: install every trigger the connection's subscriptions and workflows want."""
    _request(connection, "connection.repair", actor)


def connection_repair(*, connection_id, actor: str) -> dict:
    """Install (again) the wanted captures, under the connection's row lock like every install; then check
    it, so that its page shows the drift gone. A failure is recorded in the audit log and on the row, and
    raised."""
    failure = None
    with transaction.atomic():
        connection = Connection.objects.select_for_update().filter(id=connection_id).first()
        if connection is None:
            return {"installed": []}
        wanted = connection_captures_wanted(connection=connection)
        try:
            changed = connection_captures_install(connection=connection, captures=wanted, actor=actor, each=True)
            failed = [c.removeprefix("failed ") for c in changed if c.startswith("failed ")]
            if failed:
                raise CaptureInstallFailed("Some captures could not be installed: " + "; ".join(failed))
        except ApplicationError as exc:
            audit_record(
                action="connection.repair_failed",
                target_type="connection",
                target_id=connection.id,
                product_id=connection.product_id,
                actor=actor,
                data={"error": exc.message},
            )
            Connection.objects.filter(id=connection.id).update(last_error=exc.message, last_error_at=timezone.now())
            failure = exc
    if failure is not None:
        raise failure
    _errors_acknowledge(connection, wanted)
    connection_check_now(connection_id=connection_id, actor=actor)
    return {"installed": [c.name for c in wanted]}


def _errors_acknowledge(connection: Connection, wanted: list) -> None:
    """After a repair, forget the trigger errors of captures whose table matches them again (the column is
    back, the source corrected): an operator's repair is the acknowledgment, as a table that rarely sees a
    DELETE may not give the delete trigger a good event for a long time."""
    try:
        with customer_connect(connection) as conn:
            broken = {p["capture"] for p in captures_drift(conn, schema=connection.schema, captures=wanted)}
    except psycopg.Error:
        return
    with transaction.atomic():
        locked = Connection.objects.select_for_update().get(id=connection.id)
        errors = {k: v for k, v in (locked.capture_errors or {}).items() if k.split(":")[0] in broken}
        if errors != (locked.capture_errors or {}):
            Connection.objects.filter(id=connection.id).update(capture_errors=errors)
