"""Email engagement: an open pixel and click-through links, and what providers report.

With tracking on (the workflow's `tracking`), an email's HTML gets, when its delivery is built, a 1x1
image and links rewritten to Rowbell's redirect. Both carry a token signed with the service's secret
key: the delivery's id, and for a click the exact target. A token that was altered, or made for
another target, is refused; the redirect only ever goes to the http(s) URL that was signed.

Tokens carry the time they were signed (django.core.signing.dumps is timestamped, and always was, so tokens
issued before expiry was enforced expire by the same rule) and expire after
ROWBELL_TRACKING_TOKEN_MAX_AGE_DAYS: an old link neither counts nor redirects, so a leaked or harvested link
cannot serve as a redirect through this service forever.
"""

from __future__ import annotations

import html
import re
from datetime import timedelta

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.utils import timezone

from .models import Delivery, DeliveryStatus

_CLICK_SALT = "rowbell.tracking.click"
_OPEN_SALT = "rowbell.tracking.open"
_LINK = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(https?://[^"'<>\s]+)\2""", re.IGNORECASE)

# How far a delivery has got: engagement only moves a status forward (an open after a click stays clicked).
_RANK = {DeliveryStatus.SENT: 1, DeliveryStatus.DELIVERED: 2, DeliveryStatus.OPENED: 3, DeliveryStatus.CLICKED: 4}


def _base() -> str:
    return settings.ROWBELL_PUBLIC_URL.rstrip("/")


def click_url(message_id: str, target: str) -> str:
    return f"{_base()}/t/c/{signing.dumps({'m': message_id, 'u': target}, salt=_CLICK_SALT, compress=True)}"


def open_url(message_id: str) -> str:
    return f"{_base()}/t/o/{signing.dumps(message_id, salt=_OPEN_SALT)}.gif"


def tracking_apply(payload: dict, message_id: str, *, opens: bool, clicks: bool) -> dict:
    """The email payload with its HTML body tracked; the plain-text body is left as written."""
    body = payload.get("html")
    if not body or not (opens or clicks):
        return payload
    if clicks:
        body = _LINK.sub(
            lambda m: (
                f"{m.group(1)}{m.group(2)}{html.escape(click_url(message_id, html.unescape(m.group(3))))}{m.group(2)}"
            ),
            body,
        )
    if opens:
        pixel = f'<img src="{html.escape(open_url(message_id))}" width="1" height="1" alt="" style="display:none">'
        at = body.lower().rfind("</body>")
        body = body[:at] + pixel + body[at:] if at >= 0 else body + pixel
    return {**payload, "html": body, "tracking": {"opens": opens, "clicks": clicks}}


class TokenExpired(Exception):
    """A tracking token that was signed by this service, but longer ago than its maximum age."""


def _loads(token: str, salt: str):
    """The signed value; raises TokenExpired when older than ROWBELL_TRACKING_TOKEN_MAX_AGE_DAYS,
    signing.BadSignature when altered or forged (SignatureExpired is a BadSignature: caught first)."""
    try:
        return signing.loads(token, salt=salt, max_age=timedelta(days=settings.ROWBELL_TRACKING_TOKEN_MAX_AGE_DAYS))
    except signing.SignatureExpired as exc:
        raise TokenExpired(str(exc)) from exc


def click_target(token: str) -> tuple[str, str] | None:
    """(delivery id, target) of an untampered click token whose target is http(s); None otherwise.
    Raises TokenExpired for a genuine token past its maximum age."""
    try:
        value = _loads(token, _CLICK_SALT)
    except signing.BadSignature:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("m"), str) or not isinstance(value.get("u"), str):
        return None
    if not re.match(r"^https?://[^\s]+$", value["u"], re.IGNORECASE):
        return None
    return value["m"], value["u"]


def open_message(token: str) -> str | None:
    """The delivery id of an untampered open token younger than its maximum age; None otherwise."""
    try:
        value = _loads(token, _OPEN_SALT)
    except (signing.BadSignature, TokenExpired):
        return None
    return value if isinstance(value, str) else None


def engagement_record(*, message_id: str, status: str, source: str, detail: dict | None = None) -> bool:
    """Record an engagement or provider-reported event for a delivery: always an event row; the status
    itself only moves forward (opens and clicks), or to a reported failure (bounced, complained).
    Returns False for an unknown delivery."""
    from .services import status_events_record

    now = timezone.now()
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().filter(message_id=message_id).only("id", "status").first()
        if delivery is None:
            return False
        current = delivery.status
        moves = (status in _RANK and _RANK.get(current, 0) and _RANK[status] > _RANK[current]) or (
            status in (DeliveryStatus.BOUNCED, DeliveryStatus.COMPLAINED, DeliveryStatus.FAILED) and current in _RANK
        )
        if moves:
            Delivery.objects.filter(id=delivery.id).update(status=status, updated_at=now)
        status_events_record(
            [(delivery.id, status, {**(detail or {}), **({} if moves else {"status_kept": current})})],
            at=now,
            source=source,
        )
    return True


# What a provider's event (anymail's normalized event_type) means for a delivery.
PROVIDER_EVENTS = {
    "delivered": DeliveryStatus.DELIVERED,
    "opened": DeliveryStatus.OPENED,
    "clicked": DeliveryStatus.CLICKED,
    "bounced": DeliveryStatus.BOUNCED,
    "complained": DeliveryStatus.COMPLAINED,
    "rejected": DeliveryStatus.FAILED,
    "failed": DeliveryStatus.FAILED,
}


def provider_event(sender, event, esp_name, *, product_id=None, organization_id=None, **kwargs):
    """A provider's event, already authenticated by anymail's view (HTTP basic auth, and the provider's
    signature where it signs). Found by the id Rowbell put in the message's metadata, else by the
    provider's own message id; with `product_id` (a product's own event webhook) only among that
    product's deliveries, and with `organization_id` only among that organization's. Connected to
    anymail's tracking signal for the service-wide route, called directly by the per-product one."""
    status = PROVIDER_EVENTS.get(event.event_type)
    if status is None:
        return
    deliveries = Delivery.objects.all()
    if product_id is not None:
        deliveries = deliveries.filter(product_id=product_id)
        if organization_id is not None:
            deliveries = deliveries.filter(organization_id=organization_id)
    message_id = (event.metadata or {}).get("rowbell_message_id")
    if message_id and product_id is not None:
        # Metadata is the sender's word: another product's id in it must not reach that product's delivery.
        message_id = deliveries.filter(message_id=message_id).values_list("message_id", flat=True).first()
    elif not message_id and event.message_id:
        message_id = (
            deliveries.filter(provider_message_id=event.message_id).values_list("message_id", flat=True).first()
        )
    if message_id:
        engagement_record(
            message_id=message_id,
            status=status,
            source="provider",
            detail={
                "provider": esp_name,
                "event": event.event_type,
                "reason": (event.reject_reason or event.description or "")[:300],
                "provider_event_id": str(event.event_id or "")[:200],
            },
        )
