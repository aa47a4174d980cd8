"""A row written by the customer's application reaches a receiver through real worker and beat processes."""

import pytest
from standardwebhooks.webhooks import Webhook

from .conftest import customer_db_reset, writer_connect

pytestmark = pytest.mark.e2e


def test_an_inserted_row_is_delivered_by_the_running_services(processes, receiver, customer_db, product_with_key):
    from tests.conftest import client_for

    product, key = product_with_key
    client = client_for(key)
    try:
        connection = client.post("/api/v1/connections", {"name": "shop", **customer_db}, format="json").json()
        hook = client.post("/api/v1/webhooks", {"url": receiver.url(), "source": {
            "connection": connection["id"], "table": "public.orders", "events": ["row.created"]}},
            format="json").json()
        processes.worker()
        processes.beat()
        with writer_connect() as app:
            app.execute("INSERT INTO public.orders (status) VALUES ('new')")
        assert receiver.wait_for(1, timeout=30), processes.logs["beat"].read_text()[-2000:]
        body = Webhook(hook["secret"]).verify(receiver.requests[0]["body"], receiver.requests[0]["headers"])
        assert body["type"] == "row.created" and body["ids"] == [1] and body["webhook_id"] == hook["id"]
    finally:
        customer_db_reset()
