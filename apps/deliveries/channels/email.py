from __future__ import annotations

import smtplib
import socket
import time

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.validators import validate_email
from rest_framework import serializers

from apps.workflows.templating import TemplateRenderError, render

from .base import Channel, DeliveryError, Rendered, SendResult, TemplateField


def _smtp_error(exc: smtplib.SMTPException) -> DeliveryError:
    code = getattr(exc, "smtp_code", None)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [c for c, _ in exc.recipients.values()]
        code = codes[0] if codes else None
    # SMTP 5xx replies are permanent (bad address, rejected content); 4xx are "try again later".
    permanent = isinstance(code, int) and 500 <= code < 600
    return DeliveryError(f"SMTP error {code or ''}: {exc}".replace("  ", " "), permanent=permanent,
                         status_code=code if isinstance(code, int) else None)


class EmailChannel(Channel):
    """Email through Django's configured backend (SMTP by default). 'sent' means the server took it."""

    kind = "email"

    class StepConfig(serializers.Serializer):
        to = TemplateField(required=False, default="{{ recipient.email }}", max_length=1000)
        subject = TemplateField(max_length=2000)
        body = TemplateField(help_text="Plain-text body.")
        html = TemplateField(html=True, required=False, help_text="Optional HTML body; values are escaped.")

    def render(self, *, config: dict, context: dict, product, memo: dict | None = None) -> Rendered:
        try:
            to = render(config["to"], context).strip()
        except TemplateRenderError as exc:
            # A recipient without the address field is skipped, not an error in the workflow.
            return Rendered(skip_reason=f"The recipient has no email address ({exc}).")
        if not to:
            return Rendered(skip_reason="The recipient has no email address.")
        try:
            validate_email(to)
        except DjangoValidationError:
            return Rendered(skip_reason=f"'{to}' is not a valid email address.")
        payload = {
            "to": to,
            "from": settings.DEFAULT_FROM_EMAIL,
            "subject": " ".join(render(config["subject"], context).split()),
            "text": render(config["body"], context),
        }
        if config.get("html"):
            payload["html"] = render(config["html"], context, html=True)
        return Rendered(target=to, payload=payload)

    def send(self, delivery) -> SendResult:
        p = delivery.payload
        message = EmailMultiAlternatives(
            subject=p["subject"], body=p["text"], from_email=p["from"], to=[p["to"]],
            headers={"X-Rowbell-Message-Id": delivery.message_id},
            connection=get_connection(fail_silently=False),
        )
        if p.get("html"):
            message.attach_alternative(p["html"], "text/html")
        started = time.monotonic()
        try:
            message.send()
        except smtplib.SMTPException as exc:
            raise _smtp_error(exc) from exc
        except (OSError, socket.timeout) as exc:
            raise DeliveryError(f"Cannot reach the mail server: {exc}") from exc
        return SendResult(status="sent", duration_ms=int((time.monotonic() - started) * 1000))
