import psycopg
from django.core.management.base import BaseCommand, CommandError

from apps.connections.customer import failure_reason
from apps.connections.models import Connection
from apps.connections.services import (
    CustomerDatabaseUnavailable,
    connection_captures_install,
    connection_captures_prune,
    connection_captures_status,
    connection_captures_wanted,
    connection_drift,
)
from apps.core.exceptions import ApplicationError


class Command(BaseCommand):
    help = (
        "Show and repair Rowbell's triggers in customer databases. status: wanted vs installed (drift); "
        "install: install what is missing; prune: retire what no subscription uses; uninstall: retire all."
    )

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["status", "install", "prune", "uninstall"])
        parser.add_argument("--connection", help="A connection id (default: every connection).")

    def handle(self, *args, action, connection=None, **options):
        connections = Connection.objects.all()
        if connection:
            connections = connections.filter(id=connection)
            if not connections.exists():
                raise CommandError(f"No connection {connection}.")
        failed = False
        for conn in connections.order_by("name"):
            self.stdout.write(f"{conn.name} ({conn.id}):")
            try:
                failed |= self._do(action, conn)
            except CustomerDatabaseUnavailable as exc:
                self.stdout.write(f"  unreachable: {exc.message}")
                failed = True
            except ApplicationError as exc:  # refused: say why, go on with the other connections
                self.stdout.write(f"  refused: {exc.message}")
                failed = True
            except psycopg.OperationalError as exc:
                self.stdout.write(f"  unreachable: {failure_reason(exc)}")
                failed = True
        if failed and action in ("status", "install"):
            raise CommandError("Drift, refusals or unreachable databases: see above.")

    def _do(self, action, conn) -> bool:
        if action == "install":
            wanted = connection_captures_wanted(connection=conn)
            changed = connection_captures_install(connection=conn, captures=wanted, actor="cli", each=True)
            failed = [c.removeprefix("failed ") for c in changed if c.startswith("failed ")]
            done = [c for c in changed if not c.startswith("failed ")]
            self.stdout.write(
                f"  {len(wanted)} capture(s): " + (f"{len(done)} change(s) made" if done else "everything was in place")
            )
            for failure in failed:
                self.stdout.write(f"  could not install {failure}")
            return bool(failed)
        if action in ("prune", "uninstall"):
            retired = connection_captures_prune(connection=conn, keep_none=action == "uninstall", actor="cli")
            self.stdout.write(f"  retired {len(retired)} trigger(s)" + "".join(f"\n    {r}" for r in retired))
        status = connection_captures_status(connection=conn)
        problems = connection_drift(connection=conn)
        broken: dict[str, list] = {}
        for problem in problems:
            broken.setdefault(problem["capture"], []).append(problem)
        for name in status["wanted"]:
            state = "installed" if name in status["installed"] else "MISSING"
            if any(not p["repairable"] for p in broken.get(name, [])):
                state = "BROKEN"
            elif broken.get(name):
                state = "INCOMPLETE (run: triggers install)"
            self.stdout.write(f"  {name}: {state}")
            for problem in broken.get(name, []):
                users = ", ".join(
                    [f"workflow {w}" for w in problem["workflows"]] + [f"endpoint {e}" for e in problem["endpoints"]]
                )
                self.stdout.write(
                    f"    {problem['table']}: {problem['detail']}" + (f" Affects {users}." if users else "")
                )
        for name in status["unused"]:
            self.stdout.write(f"  {name}: installed but unused (run: triggers prune)")
        if status["retired_drop_statements"]:
            self.stdout.write("  retired triggers; a table owner may drop them:")
            for statement in status["retired_drop_statements"]:
                self.stdout.write(f"    {statement}")
        return bool(status["missing"] or status["unused"] or problems)
