from django.core.management.base import BaseCommand, CommandError
from psycopg import sql

from apps.connections.names import table_parse
from apps.connections.services import IDENTIFIER


class Command(BaseCommand):
    help = (
        "Print the SQL a DBA runs, in the customer database, to create Rowbell's dedicated user with the "
        "least rights it needs: log in, own its schema, read and put triggers on the watched tables."
    )

    def add_arguments(self, parser):
        parser.add_argument("--user", required=True, help="The role Rowbell logs in as, e.g. rowbell.")
        parser.add_argument("--tables", required=True, help="Watched tables, comma-separated: public.orders,...")
        parser.add_argument(
            "--read",
            default="",
            help="Tables Rowbell only reads by key (a trigger's related tables, e.g. public.customers), comma-separated.",
        )
        parser.add_argument("--schema", default="rowbell", help="Rowbell's own schema (default rowbell).")

    def handle(self, *args, user, tables, schema, read="", **options):
        names = [t.strip() for t in tables.split(",") if t.strip()]
        read_names = [t.strip() for t in read.split(",") if t.strip()]
        if not IDENTIFIER.match(user):
            raise CommandError("--user: a lower-case identifier (letters, digits, _).")
        if not IDENTIFIER.match(schema):
            raise CommandError("--schema: a lower-case identifier (letters, digits, _).")
        qualified, bad = [], []
        for name in names:
            try:
                qualified.append(table_parse(name))
            except ValueError:
                bad.append(name)
        if not names or bad:
            raise CommandError(f"--tables: schema.table names, comma-separated (not: {', '.join(bad) or 'empty'}).")
        read_only = []
        for name in read_names:
            try:
                read_only.append(table_parse(name))
            except ValueError:
                raise CommandError(f"--read: schema.table names, comma-separated (not: {name}).") from None
        read_only = [t for t in read_only if t not in qualified]
        role, own = sql.Identifier(user), sql.Identifier(schema)
        schemas = sorted({s for s, _ in qualified + read_only})

        def q(statement):
            return statement.as_string(None)

        lines = [
            "-- Run as a superuser (or the tables' owner) in the database Rowbell will watch.",
            "-- Choose a strong password; give it to Rowbell only.",
            q(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'change-me';").format(role)),
            "DO $$ BEGIN",
            f"    EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), '{user}');",
            "END $$;",
            "-- Rowbell's own schema (event log, trigger functions), owned by its user: no CREATE on the",
            "-- database is needed, and writers of the watched tables need no grants on it.",
            q(sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {};").format(own, role)),
        ]
        for name in schemas:
            lines.append(q(sql.SQL("GRANT USAGE ON SCHEMA {} TO {};").format(sql.Identifier(name), role)))
        lines.append(
            q(
                sql.SQL("GRANT SELECT, TRIGGER ON TABLE {} TO {};").format(
                    sql.SQL(", ").join(sql.Identifier(s, t) for s, t in qualified), role
                )
            )
        )
        if read_only:
            lines.append("-- Related tables: read by key when a run starts (a trigger's `related`), never watched.")
            lines.append(
                q(
                    sql.SQL("GRANT SELECT ON TABLE {} TO {};").format(
                        sql.SQL(", ").join(sql.Identifier(s, t) for s, t in read_only), role
                    )
                )
            )
        lines += [
            "-- A partitioned table's partitions need the same grant (a statement naming a partition fires only",
            "-- the partition's triggers). This grants it on those that exist; grant it on each new partition",
            "-- too (Rowbell installs its triggers there within its health interval and reports it until then).",
            "DO $$ DECLARE p regclass; BEGIN",
        ]
        for schema_name, table_name in qualified:
            lines.append(
                q(
                    sql.SQL(
                        "    FOR p IN SELECT relid FROM pg_partition_tree(to_regclass({})) WHERE relid <> to_regclass({}) LOOP "
                        "EXECUTE format('GRANT SELECT, TRIGGER ON TABLE %s TO %I', p, {}); END LOOP;"
                    ).format(
                        sql.Literal(sql.Identifier(schema_name, table_name).as_string(None)),
                        sql.Literal(sql.Identifier(schema_name, table_name).as_string(None)),
                        sql.Literal(user),
                    )
                )
            )
        lines.append("END $$;")
        self.stdout.write("\n".join(lines))
