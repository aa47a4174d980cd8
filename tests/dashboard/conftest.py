# A real customer database, for what the dashboard says about connections (tests/connections/conftest.py).
from tests.connections.conftest import connection, customer_db  # noqa: F401
