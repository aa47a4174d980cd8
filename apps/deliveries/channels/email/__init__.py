"""The email channel: Django's email backend by default, or the product's provider (SMTP, SendGrid, Mailgun,
Postmark, Amazon SES)."""

from __future__ import annotations

import smtplib
import time

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.validators import validate_email
from rest_framework import serializers

from apps.core.templating import render

from ..base import Channel, DeliveryError, Rendered, SendResult, TemplateField, outcome_guarded, recipient_address
from . import providers  # noqa: F401  (registers the channel's providers)


def _smtp_error(exc: smtplib.SMTPException) -> DeliveryError:
    code = getattr(exc, "smtp_code", None)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [c for c, _ in exc.recipients.values()]
        code = codes[0] if codes else None
    # SMTP 5xx replies are permanent (bad address, rejected content); 4xx are "try again later".
    permanent = isinstance(code, int) and 500 <= code < 600
    return DeliveryError(
        f"SMTP error {code or ''}: {exc}".replace("  ", " "),
        permanent=permanent,
        status_code=code if isinstance(code, int) else None,
    )


class EmailChannel(Channel):
    """Email through Django's configured backend (SMTP by default). 'sent' means the server took it."""

    kind = "email"

    class StepConfig(serializers.Serializer):
        to = TemplateField(required=False, default="{{ recipient.email }}", max_length=1000)
        subject = TemplateField(max_length=2000)
        body = TemplateField(help_text="Plain-text body.")
        html = TemplateField(html=True, required=False, help_text="Optional HTML body; values are escaped.")

    def render(self, *, config: dict, context: dict, product, memo: dict | None = None) -> Rendered:
        to, skip = recipient_address(config, context, "email address")
        if skip:
            return Rendered(skip_reason=skip)
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

    def recipient_errors(self, recipient: dict) -> dict[str, list[str]]:
        email = recipient.get("email")
        if email is None:
            return {}
        try:
            if not isinstance(email, str):
                raise DjangoValidationError("")
            validate_email(email)
        except DjangoValidationError:
            return {"email": ["Enter a valid email address."]}
        return {}

    def prepare(self, delivery, *, definition: dict, memo: dict | None = None) -> None:
        """The sender its provider sends as (the organization's, else the product's `from_email` option), so
        that the payload, the review queue and the API show the From the recipient will see; then opens and
        clicks tracking, when the workflow asks for it (`"tracking": {"opens": ..., "clicks": ...}`)."""
        from ..providers import provider_for

        configured = provider_for(delivery, memo if memo is not None else {})
        sender = configured.options.get("from_email") if configured else None
        if sender:
            delivery.payload = {**delivery.payload, "from": sender}
        tracking = definition.get("tracking") or {}
        if tracking.get("opens") or tracking.get("clicks"):
            from apps.deliveries.tracking import tracking_apply

            delivery.payload = tracking_apply(
                delivery.payload,
                delivery.message_id,
                opens=tracking.get("opens", False),
                clicks=tracking.get("clicks", False),
            )

    def preview(self, delivery) -> dict:
        payload = delivery.payload or {}
        return {
            "kind": "email",
            "subject": payload.get("subject", ""),
            "from": payload.get("from", ""),
            "to": payload.get("to", ""),
            "text": payload.get("text", ""),
            "html": payload.get("html", ""),
        }

    def send_many(self, deliveries) -> list[SendResult | DeliveryError]:
        """Each product's (or organization's) provider, else the default backend (EMAIL_BACKEND): one
        connection per provider for the whole batch."""
        from ..providers import provider_for

        results: list = [None] * len(deliveries)
        groups: dict = {}
        memo: dict = {}
        for i, delivery in enumerate(deliveries):
            configured = provider_for(delivery, memo)
            groups.setdefault(id(configured), (configured, []))[1].append(i)
        for configured, indexes in groups.values():
            title = configured.provider.title if configured else "The mail server"
            name = configured.provider.name if configured else "default"
            try:
                connection = (
                    configured.provider.connection(configured.credentials, configured.options)
                    if configured
                    else get_connection(fail_silently=False)
                )
                connection.open()
            except Exception as exc:  # noqa: BLE001 - every way a connection can fail is recorded, not raised
                error = _error(exc, title)
                error.provider = name
                for i in indexes:
                    results[i] = error
                continue
            try:
                sender = configured.options.get("from_email") if configured else None
                for i in indexes:
                    results[i] = outcome_guarded(self._send_on, connection, deliveries[i], sender, title)
                    results[i].provider = name
            finally:
                try:
                    connection.close()
                except Exception:  # noqa: BLE001 - the messages are sent; a failed goodbye changes nothing
                    pass
        return results

    def _send_on(self, connection, delivery, sender: str | None, title: str) -> SendResult | DeliveryError:
        p = delivery.payload
        message = EmailMultiAlternatives(
            subject=p["subject"],
            body=p["text"],
            from_email=sender or p["from"],
            to=[p["to"]],
            headers={"X-Rowbell-Message-Id": delivery.message_id},
            connection=connection,
        )
        if p.get("html"):
            message.attach_alternative(p["html"], "text/html")
        # Providers echo metadata in their event webhooks: how engagement finds its delivery.
        message.metadata = {"rowbell_message_id": delivery.message_id}
        started = time.monotonic()
        try:
            message.send()
        except Exception as exc:  # noqa: BLE001 - mapped to permanent or retryable below
            return _error(exc, title)
        status = getattr(message, "anymail_status", None)
        return SendResult(
            status="sent",
            duration_ms=int((time.monotonic() - started) * 1000),
            provider_message_id=(status.message_id or "") if status else "",
        )


def _error(exc: Exception, title: str) -> DeliveryError:
    """A failed send, permanent or worth retrying, in the provider's words."""
    from anymail.exceptions import AnymailAPIError, AnymailRecipientsRefused

    from apps.deliveries.outbound import DestinationRefused

    if isinstance(exc, smtplib.SMTPException):
        return _smtp_error(exc)
    if isinstance(exc, DestinationRefused):
        return DeliveryError(exc.message, permanent=True)
    if isinstance(exc, AnymailRecipientsRefused):
        return DeliveryError(f"{title} refused the recipient: {exc}", permanent=True)
    if isinstance(exc, AnymailAPIError):
        code = exc.status_code
        cause = getattr(exc, "__cause__", None)
        if code is None and cause is not None and getattr(cause, "response", None):  # boto3 (SES)
            code = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        from ..providers import refusal_error

        return refusal_error(title, code, str(exc).splitlines()[0][:500])
    if isinstance(exc, OSError):
        return DeliveryError(f"Cannot reach the mail server: {exc}")
    return DeliveryError(f"{title}: {exc.__class__.__name__}: {exc}")
