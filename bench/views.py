"""Reference views for the API benchmark (not part of the product)."""

import psycopg
from django.db import connection
from django.http import JsonResponse


def insert_one_row(request):
    """The cheapest durable write a request can do: one prepared single-row INSERT (an audit row), then
    the same JSON answer as /ping. The ceiling for any endpoint that must persist before answering."""
    with connection.wrap_database_errors:
        connection.ensure_connection()
        with psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(
                "INSERT INTO audit_auditevent (created_at, actor, action, target_type, target_id, data) "
                "VALUES (now(), 'bench', 'bench.insert', 'bench', '0', '{}')",
                prepare=True,
            )
    return JsonResponse({"ok": True})
