"""The demo's webhook sink (`manage.py webhook_sink`) says whether each message's signature is valid, with the
secrets of the endpoints that point at it (their URLs are stored encrypted)."""

import json
import socket
import threading
import time
import urllib.request

import pytest
from django.core.management import call_command

from apps.deliveries.models import Delivery
from apps.deliveries.services import deliveries_send
from tests import factories

from .test_webhook_delivery import _queued

pytestmark = pytest.mark.django_db(transaction=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_sink_finds_the_endpoint_s_secret_and_says_the_signature_is_valid(product):
    port = _free_port()
    threading.Thread(target=call_command, args=("webhook_sink", "--port", str(port)), daemon=True).start()
    for _ in range(50):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/messages.json", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    endpoint = factories.make_endpoint(product, f"http://127.0.0.1:{port}/hooks/orders")
    factories.make_endpoint(product, f"http://127.0.0.1:{_free_port()}/elsewhere")  # another port's secret
    factories.make_workflow(product, key="w", steps=[factories.webhook_step(endpoint)])
    [delivery] = Delivery.objects.filter(request=_queued(product))
    deliveries_send(delivery_ids=[delivery.id])

    [message] = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/messages.json", timeout=5))
    assert message["webhook_id"] == delivery.message_id and message["signature_valid"] is True
