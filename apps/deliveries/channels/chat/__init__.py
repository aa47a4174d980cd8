"""The chat channel: a message to a team chat (Slack, Microsoft Teams) through an incoming webhook."""

from __future__ import annotations

from rest_framework import serializers

from apps.core.destinations import OUTBOUND, DestinationRefused, url_check
from apps.core.encryption import seal
from apps.core.masking import url_mask
from apps.core.templating import render

from ..base import Rendered, TemplateField
from ..provided import ProvidedChannel
from . import providers  # noqa: F401  (registers the channel's providers)


class ChatChannel(ProvidedChannel):
    """A message to the team chat the product configured (Slack or Microsoft Teams incoming webhook), or to
    the recipient's own `chat_webhook`."""

    kind = "chat"

    class StepConfig(serializers.Serializer):
        text = TemplateField(max_length=10000)
        title = TemplateField(required=False, max_length=500)

    def render(self, *, config: dict, context: dict, product, memo: dict | None = None) -> Rendered:
        payload = {"text": render(config["text"], context)}
        if config.get("title"):
            payload["title"] = " ".join(render(config["title"], context).split())
        # A recipient with a chat target of its own (e.g. a customer's Slack channel) gets it there, in
        # the configured provider's format; the others go to the product's configured webhook.
        # It is a bearer credential: sealed in the stored payload (unsealed only to send), masked as the target.
        own = (context.get("recipient") or {}).get("chat_webhook")
        if own:
            payload["webhook_url"] = seal(own)
        return Rendered(target=url_mask(own) if own else "team chat", payload=payload)

    def recipient_errors(self, recipient: dict) -> dict[str, list[str]]:
        chat = recipient.get("chat_webhook")
        if chat is None:
            return {}
        try:
            if not isinstance(chat, str) or len(chat) > 2000:
                raise DestinationRefused("Must be an incoming webhook URL.")
            # Read as the HTTP client will read it: `127。0。0。1` is the address 127.0.0.1.
            url_check(chat, policy=OUTBOUND)
        except DestinationRefused as exc:
            return {"chat_webhook": [exc.message]}
        return {}

    def preview(self, delivery) -> dict:
        payload = delivery.payload or {}
        return {
            "kind": "chat",
            "title": payload.get("title", ""),
            "text": payload.get("text", ""),
            "to": delivery.target,
        }
