"""The SMS channel: a text message to the recipient's phone, through the configured provider."""

from __future__ import annotations

from rest_framework import serializers

from apps.core.templating import render

from ..base import Rendered, TemplateField, recipient_address
from ..provided import ProvidedChannel
from . import providers  # noqa: F401  (registers the channel's providers)
from .addresses import E164


class SmsChannel(ProvidedChannel):
    """A text message to the recipient's phone (E.164)."""

    kind = "sms"

    class StepConfig(serializers.Serializer):
        to = TemplateField(required=False, default="{{ recipient.phone }}", max_length=1000)
        text = TemplateField(max_length=5000)

    def render(self, *, config: dict, context: dict, product, memo: dict | None = None) -> Rendered:
        to, skip = recipient_address(config, context, "phone number")
        if skip:
            return Rendered(skip_reason=skip)
        if not E164.match(to):
            return Rendered(skip_reason=f"'{to}' is not an E.164 phone number.")
        return Rendered(target=to, payload={"to": to, "text": render(config["text"], context)})

    def recipient_errors(self, recipient: dict) -> dict[str, list[str]]:
        phone = recipient.get("phone")
        if phone is not None and (not isinstance(phone, str) or not E164.match(phone)):
            return {"phone": ["Must be an E.164 number, e.g. +14155550123."]}
        return {}

    def preview(self, delivery) -> dict:
        payload = delivery.payload or {}
        return {"kind": "sms", "to": payload.get("to", ""), "text": payload.get("text", "")}
