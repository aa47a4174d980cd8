"""Every outbound destination is read as the client reads it, judged at save and at connect, and an
internal destination's answer is never shown to tenants."""

import json

import pytest

from apps.deliveries import outbound
from apps.deliveries.models import Delivery, DeliveryStatus
from tests import factories
from tests.deliveries.channels.provided import _configure, _send

pytestmark = pytest.mark.django_db

SECRET = "internal-service-says-SECRET-42"

# The examples: full stops U+3002, U+FF0E and U+FF61 that the client reads as ".", and IPv6 forms
# that carry 127.0.0.1.
DOTTED = (
    "http://127\u30020\u30020\u30021:{port}/x",
    "http://127\uff0e0\uff0e0\uff0e1:{port}/x",
    "http://127\uff610\uff610\uff611:{port}/x",
)
EMBEDDING = ("http://[::127.0.0.1]:{port}/x", "http://[::ffff:0:7f00:1]:{port}/x", "http://[2002:7f00:1::]:{port}/x")


@pytest.fixture
def production(settings):
    """Production's defaults: nothing private is opened, no internal answer is shown."""
    settings.ROWBELL_OUTBOUND_ALLOW = []
    settings.ROWBELL_CONNECTION_ALLOW = []
    settings.ROWBELL_OUTBOUND_SHOW_INTERNAL_ANSWERS = False
    return settings


@pytest.fixture
def chat(product, product_client, receiver):
    factories.make_workflow(
        product, key="w", steps=[{"id": "ping", "type": "notify", "channel": "chat", "text": "Order {{ data.order }}"}]
    )
    _configure(product_client, "chat", "slack", {"webhook_url": receiver.url("/services/ours")})
    return product


def _fields(response) -> dict:
    return {f["field"]: f["reason"] for f in response.json()["error"]["fields"]}


@pytest.mark.parametrize("url", DOTTED + EMBEDDING)
def test_a_recipients_chat_webhook_to_loopback_in_any_spelling_is_refused_at_save(
    chat, product_client, receiver, production, url
):
    response = product_client.post(
        "/api/v1/trigger",
        {"workflow": "w", "to": [{"id": "x", "chat_webhook": url.format(port=receiver.port)}]},
        format="json",
    )
    assert response.status_code == 400, response.json()
    reason = _fields(response)["to[0].chat_webhook"]
    assert "127.0.0.1" in reason and "ROWBELL_OUTBOUND_ALLOW" in reason
    assert not Delivery.objects.exists() and receiver.requests == []


@pytest.mark.parametrize("url", DOTTED + EMBEDDING)
def test_a_stored_chat_webhook_to_loopback_is_refused_at_connect_and_nothing_is_echoed(
    chat, product_client, receiver, production, url
):
    receiver.answer((404, {}, SECRET.encode()))
    # Stored by other means than the API (an older version, a direct write): the send checks it again.
    delivery = _send(chat, recipient={"id": "x", "chat_webhook": url.format(port=receiver.port)})
    assert receiver.requests == []
    assert delivery.status == DeliveryStatus.FAILED and "private or reserved" in delivery.last_error
    shown = product_client.get(f"/api/v1/deliveries/{delivery.message_id}")
    assert shown.status_code == 200 and SECRET not in json.dumps(shown.json())
    assert SECRET not in delivery.attempts.get().response_excerpt


@pytest.mark.parametrize("url", EMBEDDING)
def test_webhook_endpoints_carrying_loopback_in_ipv6_are_refused_at_save(product_client, production, url):
    response = product_client.post("/api/v1/webhooks", {"url": url.format(port=8310)}, format="json")
    assert response.status_code == 400
    assert "127.0.0.1" in _fields(response)["url"]


@pytest.mark.parametrize("url", DOTTED + EMBEDDING)
def test_chat_and_gateway_provider_urls_carrying_loopback_are_refused_at_save(product_client, production, url):
    url = url.format(port=8310)
    slack = product_client.put(
        "/api/v1/providers/chat", {"provider": "slack", "credentials": {"webhook_url": url}}, format="json"
    )
    assert slack.status_code == 400 and "credentials.webhook_url" in _fields(slack)
    gateway = product_client.put(
        "/api/v1/providers/sms",
        {
            "provider": "http",
            "credentials": {},
            "options": {"url": url, "fields": {"to": "{{ to }}", "text": "{{ text }}"}},
        },
        format="json",
    )
    assert gateway.status_code == 400 and "options.url" in _fields(gateway)


@pytest.mark.parametrize("host", ["[::127.0.0.1]", "::ffff:0:7f00:1", "2002:7f00:1::", "127.1", "2130706433"])
def test_an_smtp_host_carrying_loopback_is_refused_at_save(product_client, production, host):
    response = product_client.put(
        "/api/v1/providers/email",
        {"provider": "smtp", "credentials": {}, "options": {"host": host, "port": 25, "security": "none"}},
        format="json",
    )
    assert response.status_code == 400
    assert "options.host" in _fields(response)


@pytest.mark.parametrize("host", ["::127.0.0.1", "::ffff:0:7f00:1", "2002:7f00:1::", "127.1", "0x7f.1"])
def test_an_smtp_host_carrying_loopback_is_refused_at_connect(production, host):
    from apps.deliveries.smtp import GuardedSmtpBackend

    with pytest.raises(outbound.DestinationRefused, match="private or reserved"):
        GuardedSmtpBackend(host=host, port=25, timeout=2, fail_silently=False).open()


@pytest.mark.parametrize("url", DOTTED + EMBEDDING)
def test_the_request_path_judges_the_host_as_aiohttp_reads_it(receiver, production, url):
    answer = outbound.post_many([outbound.Post(url.format(port=receiver.port), b"{}", {})])[0]
    assert isinstance(answer, outbound.DestinationRefused) and answer.permanent
    assert receiver.requests == []


def test_an_internal_destinations_answer_is_not_shown_to_tenants(chat, product_client, receiver, settings):
    # Loopback is opened (as an operator may open a private network), but its answers are not for tenants.
    settings.ROWBELL_OUTBOUND_SHOW_INTERNAL_ANSWERS = False
    receiver.answer((404, {}, SECRET.encode()))
    delivery = _send(chat, recipient={"id": "x", "chat_webhook": receiver.url("/services/theirs")})
    assert [r["path"] for r in receiver.requests] == ["/services/theirs"]  # it was sent
    assert delivery.status == DeliveryStatus.FAILED and "HTTP 404" in delivery.last_error
    assert SECRET not in delivery.last_error and SECRET not in delivery.attempts.get().response_excerpt
    shown = product_client.get(f"/api/v1/deliveries/{delivery.message_id}")
    assert SECRET not in json.dumps(shown.json())
    assert outbound.WITHHELD in delivery.last_error


def test_an_internal_redirects_location_is_not_shown(product, receiver, settings):
    settings.ROWBELL_OUTBOUND_SHOW_INTERNAL_ANSWERS = False
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(product, key="w", steps=[factories.webhook_step(endpoint)])
    receiver.answer((302, {"Location": f"http://intranet/{SECRET}"}, b""))
    delivery = _send(product, recipient={"id": "u1"})
    assert "redirects are not followed" in delivery.last_error and SECRET not in delivery.last_error


def test_internal_answers_are_shown_where_the_operator_says_so(chat, receiver, settings):
    settings.ROWBELL_OUTBOUND_SHOW_INTERNAL_ANSWERS = True  # local and test settings: the developer's own receivers
    receiver.answer((404, {}, b"channel_not_found"))
    delivery = _send(chat, recipient={"id": "x", "chat_webhook": receiver.url("/services/theirs")})
    assert delivery.last_error == "Slack rejected the message (HTTP 404): channel_not_found"


@pytest.fixture
def banner_server():
    """A TCP service on loopback that is no mail server: it greets with a line of its own and hangs up."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                peer, _ = server.accept()
            except OSError:
                return
            with peer:
                peer.sendall(f"554 {SECRET}\r\n".encode())

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


@pytest.mark.parametrize("shown", [False, True])
def test_an_internal_smtp_servers_words_are_not_shown(banner_server, settings, shown):
    import smtplib

    from apps.deliveries.smtp import GuardedSmtpBackend

    settings.ROWBELL_OUTBOUND_SHOW_INTERNAL_ANSWERS = shown
    with pytest.raises(smtplib.SMTPConnectError) as raised:
        GuardedSmtpBackend(host="127.0.0.1", port=banner_server, timeout=5, fail_silently=False).open()
    assert raised.value.smtp_code == 554
    assert (SECRET in str(raised.value)) is shown
