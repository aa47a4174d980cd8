"""Email engagement: open pixel, click redirect (and attempts to abuse it), providers' event webhooks."""

import base64
import json
import re

import pytest
from django.test import Client

from apps.deliveries.models import Delivery, DeliveryEvent, DeliveryStatus
from tests import factories
from tests.deliveries.channels.provided import _send

pytestmark = pytest.mark.django_db

HTML = '<p>Hi {{ recipient.name }}</p><a href="https://shop.example.com/orders/{{ data.order }}?a=1&b=2">Order</a>'


def _workflow(product, **tracking):
    factories.make_workflow(
        product,
        key="w",
        tracking=tracking,
        steps=[factories.email_step(subject="Shipped", body="Order {{ data.order }}", html=HTML)],
    )


def _mail(product) -> Delivery:
    return _send(product, recipient={"id": "u1", "email": "ada@example.com", "name": "Ada"})


def _events(delivery):
    return list(DeliveryEvent.objects.filter(delivery=delivery).order_by("id").values_list("status", "source"))


def test_opens_and_clicks_are_tracked_when_the_workflow_asks(product, settings):
    settings.ROWBELL_PUBLIC_URL = "https://rowbell.example.com"
    _workflow(product, opens=True, clicks=True)
    delivery = _mail(product)
    html = delivery.payload["html"]
    link = re.search(r'href="(https://rowbell\.example\.com/t/c/[^"]+)"', html).group(1)
    pixel = re.search(r'src="(https://rowbell\.example\.com/t/o/[^"]+\.gif)"', html).group(1)
    assert "shop.example.com" not in html  # the target travels inside the signed token only
    assert delivery.payload["text"] == "Order 7"  # the plain-text body is left as written

    client = Client()
    opened = client.get(pixel.removeprefix("https://rowbell.example.com"))
    assert opened.status_code == 200 and opened["Content-Type"] == "image/gif"
    clicked = client.get(link.removeprefix("https://rowbell.example.com"))
    assert clicked.status_code == 302 and clicked["Location"] == "https://shop.example.com/orders/7?a=1&b=2"
    client.get(pixel.removeprefix("https://rowbell.example.com"))  # opened again, after the click
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.CLICKED  # an open after a click does not go back
    assert _events(delivery)[-3:] == [("opened", "tracking"), ("clicked", "tracking"), ("opened", "tracking")]


def test_tampered_or_foreign_click_tokens_go_nowhere(product):
    _workflow(product, clicks=True)
    delivery = _mail(product)
    token = re.search(r'href="[^"]*/t/c/([^"]+)"', delivery.payload["html"]).group(1)
    client = Client()
    for bad in (
        token[:-2] + ("AA" if not token.endswith("AA") else "BB"),  # altered signature
        token.replace(token.split(":")[0], token.split(":")[0][::-1], 1),  # altered content
        "eyJtIjoibXNnX3giLCJ1IjoiaHR0cHM6Ly9ldmlsLmV4YW1wbGUifQ:1abc:forged",
    ):  # forged: another target
        response = client.get(f"/t/c/{bad}")
        assert response.status_code == 400 and "Location" not in response, bad
    # A token signed by Rowbell but for a target that is not http(s) is refused too.
    from django.core import signing

    javascript = signing.dumps(
        {"m": delivery.message_id, "u": "javascript:alert(1)"}, salt="rowbell.tracking.click", compress=True
    )
    assert client.get(f"/t/c/{javascript}").status_code == 400
    # A forged pixel is still an image, and counts for nothing.
    assert client.get("/t/o/forged.gif").status_code == 200
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SENT
    assert [s for s, _ in _events(delivery)] == ["sending", "sent"]  # written claimed by the run's task


def test_without_tracking_the_email_is_left_alone(product):
    _workflow(product)
    delivery = _mail(product)
    assert delivery.payload["html"] == ('<p>Hi Ada</p><a href="https://shop.example.com/orders/7?a=1&b=2">Order</a>')


def test_provider_event_webhooks_are_authenticated_and_mapped(product, settings):
    _workflow(product)
    delivery = _mail(product)
    settings.ANYMAIL = {"WEBHOOK_SECRET": "rowbell:s3cret"}
    event = {
        "RecordType": "Delivery",
        "ServerID": 23,
        "MessageStream": "outbound",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Recipient": "ada@example.com",
        "Tag": "",
        "DeliveredAt": "2026-11-21T10:00:00Z",
        "Details": "Test delivery",
        "Metadata": {"rowbell_message_id": delivery.message_id},
    }
    url = "/webhooks/providers/postmark/tracking/"
    client = Client()
    assert client.post(url, json.dumps(event), content_type="application/json").status_code == 400  # no auth
    wrong = "Basic " + base64.b64encode(b"rowbell:guess").decode()
    assert (
        client.post(url, json.dumps(event), content_type="application/json", HTTP_AUTHORIZATION=wrong).status_code
        == 400
    )
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SENT

    auth = "Basic " + base64.b64encode(b"rowbell:s3cret").decode()
    assert (
        client.post(url, json.dumps(event), content_type="application/json", HTTP_AUTHORIZATION=auth).status_code == 200
    )
    bounce = {
        "RecordType": "Bounce",
        "Type": "HardBounce",
        "TypeCode": 1,
        "ID": 42,
        "MessageID": event["MessageID"],
        "Email": "ada@example.com",
        "Description": "The server was unable to deliver your message.",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "BouncedAt": "2026-11-21T10:01:00Z",
        "Metadata": {"rowbell_message_id": delivery.message_id},
    }
    assert (
        client.post(url, json.dumps(bounce), content_type="application/json", HTTP_AUTHORIZATION=auth).status_code
        == 200
    )
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.BOUNCED
    assert _events(delivery)[-2:] == [("delivered", "provider"), ("bounced", "provider")]

    settings.ANYMAIL = {"WEBHOOK_SECRET": ""}  # not configured: refused outright
    assert (
        client.post(url, json.dumps(event), content_type="application/json", HTTP_AUTHORIZATION=auth).status_code == 403
    )


class _Later:
    """django.core.signing's clock, `days` ahead of the real one."""

    def __init__(self, days: float):
        self.offset = days * 86400

    def time(self) -> float:
        import time

        return time.time() + self.offset


def test_click_and_open_links_expire_after_the_documented_max_age(product, settings, monkeypatch):
    from django.core import signing

    settings.ROWBELL_PUBLIC_URL = "https://rowbell.example.com"
    settings.ROWBELL_TRACKING_TOKEN_MAX_AGE_DAYS = 90
    _workflow(product, opens=True, clicks=True)
    delivery = _mail(product)
    link = re.search(r'href="https://rowbell\.example\.com(/t/c/[^"]+)"', delivery.payload["html"]).group(1)
    pixel = re.search(r'src="https://rowbell\.example\.com(/t/o/[^"]+\.gif)"', delivery.payload["html"]).group(1)
    client = Client()

    monkeypatch.setattr(signing, "time", _Later(days=91))
    clicked = client.get(link)
    # Gone, not a redirect: an old link cannot send anyone anywhere through this service.
    assert clicked.status_code == 410 and "Location" not in clicked
    assert clicked.content == b"This link has expired."
    opened = client.get(pixel)
    assert opened.status_code == 200 and opened["Content-Type"] == "image/gif"  # an image either way
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SENT and [s for s, _ in _events(delivery)] == ["sending", "sent"]

    monkeypatch.setattr(signing, "time", _Later(days=89))  # within the max age: followed and counted
    clicked = client.get(link)
    assert clicked.status_code == 302 and clicked["Location"] == "https://shop.example.com/orders/7?a=1&b=2"
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.CLICKED
