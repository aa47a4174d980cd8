"""The push channel: a notification to the recipient's devices, through the configured provider."""

from __future__ import annotations

import re

from rest_framework import serializers

from apps.core.templating import render

from ..base import Rendered, TemplateField, recipient_address
from ..provided import ProvidedChannel
from . import providers  # noqa: F401  (registers the channel's providers)

MAX_DEVICES = 20


class PushChannel(ProvidedChannel):
    """A push notification to the recipient's devices: its `push_tokens` (or `push_token`), or the
    tokens the step's `to` renders to (separated by spaces or commas)."""

    kind = "push"

    class StepConfig(serializers.Serializer):
        to = TemplateField(required=False, default="", allow_blank=True, max_length=1000)
        title = TemplateField(max_length=500)
        body = TemplateField(max_length=4000)

    def render(self, *, config: dict, context: dict, product, memo: dict | None = None) -> Rendered:
        if config.get("to"):
            to, skip = recipient_address(config, context, "push token")
            if skip:
                return Rendered(skip_reason=skip)
            tokens = [t for t in re.split(r"[\s,]+", to) if t]
        else:
            recipient = context.get("recipient") or {}
            tokens = list(recipient.get("push_tokens") or []) or (
                [recipient["push_token"]] if recipient.get("push_token") else []
            )
        tokens = list(dict.fromkeys(str(t) for t in tokens))[:MAX_DEVICES]
        if not tokens:
            return Rendered(skip_reason="The recipient has no push token.")
        target = tokens[0] if len(tokens) == 1 else f"{len(tokens)} devices"
        return Rendered(
            target=target[:2000],
            payload={
                "tokens": tokens,
                "title": " ".join(render(config["title"], context).split()),
                "body": render(config["body"], context),
            },
        )

    def recipient_errors(self, recipient: dict) -> dict[str, list[str]]:
        errors = {}
        token = recipient.get("push_token")
        if token is not None and (not isinstance(token, str) or not token.strip() or len(token) > 4096):
            errors["push_token"] = ["Must be a device token: a string of 1 to 4096 characters."]
        tokens = recipient.get("push_tokens")
        if tokens is not None and (
            not isinstance(tokens, list)
            or not 1 <= len(tokens) <= MAX_DEVICES
            or any(not isinstance(t, str) or not t.strip() or len(t) > 4096 for t in tokens)
        ):
            errors["push_tokens"] = [
                f"Must be a list of 1 to {MAX_DEVICES} device tokens (strings of 1 to 4096 characters)."
            ]
        return errors

    def preview(self, delivery) -> dict:
        payload = delivery.payload or {}
        return {
            "kind": "push",
            "title": payload.get("title", ""),
            "body": payload.get("body", ""),
            "to": delivery.target,
        }
