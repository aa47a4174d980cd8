"""The one place that opens connections to customer databases."""

from __future__ import annotations

import psycopg
from django.conf import settings

APPLICATION_NAME = "rowbell"


def customer_connect(connection, *, autocommit: bool = True) -> psycopg.Connection:
    """Open a connection to a customer database, bounded in time on connect and per statement."""
    return psycopg.connect(
        host=connection.host, port=connection.port, dbname=connection.database, user=connection.user,
        password=connection.password or None, sslmode=connection.sslmode, autocommit=autocommit,
        connect_timeout=settings.ROWBELL_CUSTOMER_CONNECT_TIMEOUT, application_name=APPLICATION_NAME,
        options=f"-c statement_timeout={int(settings.ROWBELL_CUSTOMER_STATEMENT_TIMEOUT * 1000)}",
    )
