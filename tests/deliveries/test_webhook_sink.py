"""The demo's sink (`manage.py webhook_sink`): it says whether each webhook's signature is valid, with the
secrets of the endpoints that point at it (their URLs are stored encrypted), and shows the email it was sent
beside the webhooks."""

import json
import threading
import time
import urllib.error
import urllib.request

import pytest
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.management import call_command

from apps.deliveries.models import Delivery
from apps.deliveries.services import deliveries_send
from tests import factories
from tests.conftest import free_port

from .test_webhook_delivery import _queued

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_sink_finds_the_endpoint_s_secret_and_says_the_signature_is_valid(product):
    port = free_port()
    threading.Thread(
        target=call_command, args=("webhook_sink", "--port", str(port), "--smtp-port", str(free_port())), daemon=True
    ).start()
    for _ in range(50):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/messages.json", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    endpoint = factories.make_endpoint(product, f"http://127.0.0.1:{port}/hooks/orders")
    factories.make_endpoint(product, f"http://127.0.0.1:{free_port()}/elsewhere")  # another port's secret
    factories.make_workflow(product, key="w", steps=[factories.webhook_step(endpoint)])
    [delivery] = Delivery.objects.filter(request=_queued(product))
    deliveries_send(delivery_ids=[delivery.id])

    [message] = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/messages.json", timeout=5))
    assert message["webhook_id"] == delivery.message_id and message["signature_valid"] is True


def _get(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode(), response.headers


def test_an_email_sent_to_the_sink_shows_on_its_page_beside_the_webhooks(demo_sink):
    port, smtp_port = demo_sink
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/demo", data=b'{"type": "workflow.notification"}', headers={"webhook-id": "msg_hook"}
    )
    urllib.request.urlopen(request, timeout=5).close()
    message = EmailMultiAlternatives(
        subject="Your order A-1 has shipped",
        body="Hi Ann,\n\nOrder A-1 is on its way.\n",
        from_email="orders@demo-shop.example",
        to=["ann@example.com"],
        headers={"X-Rowbell-Message-Id": "msg_mail"},
        connection=get_connection("django.core.mail.backends.smtp.EmailBackend", host="127.0.0.1", port=smtp_port),
    )
    message.attach_alternative('<h2>Hi Ann</h2><img src="https://tracker.example/open.gif">', "text/html")
    assert message.send() == 1

    page, _ = _get(f"http://127.0.0.1:{port}/")
    for shown in (
        "Your order A-1 has shipped",
        "orders@demo-shop.example",
        "ann@example.com",
        "Order A-1 is on its way.",
    ):
        assert shown in page
    assert "msg_mail" in page and "msg_hook" in page and page.index("msg_mail") < page.index("msg_hook")  # newest first
    email, webhook = json.loads(_get(f"http://127.0.0.1:{port}/messages.json")[0])
    assert (email["kind"], webhook["kind"]) == ("email", "webhook")
    assert email["to"] == "ann@example.com" and email["rcpt_to"] == ["ann@example.com"]
    assert f'href="/emails/{email["number"]}"' in page

    # The HTML part opens on its own page, sandboxed: no script runs and nothing is fetched (no open counted).
    body, headers = _get(f"http://127.0.0.1:{port}/emails/{email['number']}")
    assert body == email["html"] and "<h2>Hi Ann</h2>" in body
    assert headers["Content-Security-Policy"].startswith("sandbox; default-src 'none'")


def test_the_sink_answers_404_for_an_email_it_does_not_have(demo_sink):
    port, _ = demo_sink
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/emails/7", timeout=5)
    assert error.value.code == 404


@pytest.mark.parametrize("host", ["rebound.example", "rebound.example:8001", "10.0.0.5"])
def test_the_sink_answers_only_requests_addressed_to_this_machine(demo_sink, host):
    # A page on another site whose name was made to resolve to 127.0.0.1 (DNS rebinding) reads nothing.
    port, _ = demo_sink
    request = urllib.request.Request(f"http://127.0.0.1:{port}/messages.json", headers={"Host": host})
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=5)
    assert error.value.code == 403
    for allowed in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
        request = urllib.request.Request(f"http://127.0.0.1:{port}/messages.json", headers={"Host": allowed})
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert answer.status == 200 and json.loads(answer.read()) == []
