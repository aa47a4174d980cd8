"""Chat providers: Slack and Microsoft Teams incoming webhooks."""

from __future__ import annotations

import re

from rest_framework import serializers

from apps.core.encryption import unseal
from apps.deliveries import outbound

from ..providers import Provider, SafeUrlField, json_post, provider_register


class _ChatWebhook(serializers.Serializer):
    webhook_url = SafeUrlField(max_length=2000, help_text="The incoming webhook's URL (a secret).")


def _chat_url(payload: dict, credentials: dict) -> str:
    """Where a chat message goes: the recipient's own webhook (sealed in the payload), else the configured one."""
    return unseal(payload["webhook_url"]) if payload.get("webhook_url") else credentials["webhook_url"]


class Slack(Provider):
    """Slack incoming webhooks: a JSON POST of {"text": ...}; Slack answers 200 "ok", or an error code
    in the body (400 invalid_payload, 403 action_prohibited, 404 channel_not_found, 410
    channel_is_archived, 429 with Retry-After, 500 rollup_error)."""

    channel, name, title = "chat", "slack", "Slack"
    ok_statuses = (200,)
    Credentials = _ChatWebhook

    def request(self, payload, credentials, options):
        text = f"*{payload['title']}*\n{payload['text']}" if payload.get("title") else payload["text"]
        return json_post(_chat_url(payload, credentials), {"text": text})


class Teams(Provider):
    """Microsoft Teams incoming webhooks (Workflows): a JSON POST of a message with one Adaptive Card;
    Teams answers 200 or 202. A legacy connector may answer 200 with a failure in the body, which is
    read as such."""

    channel, name, title = "chat", "teams", "Microsoft Teams"
    ok_statuses = (200, 202)
    Credentials = _ChatWebhook

    def request(self, payload, credentials, options):
        body = []
        if payload.get("title"):
            body.append(
                {"type": "TextBlock", "text": payload["title"], "weight": "Bolder", "size": "Medium", "wrap": True}
            )
        body.append({"type": "TextBlock", "text": payload["text"], "wrap": True})
        card = {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": body,
        }
        return json_post(
            _chat_url(payload, credentials),
            {
                "type": "message",
                "attachments": [
                    {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
                ],
            },
        )

    def outcome(self, answer):
        failed = answer.excerpt.startswith("Webhook message delivery failed")
        if answer.status == 200 and failed:
            found = re.search(r"HTTP error (\d{3})", answer.excerpt)
            code = int(found.group(1)) if found else 500
            return super().outcome(
                outbound.HttpAnswer(code, answer.headers, answer.excerpt, answer.duration_ms, shown=answer.shown)
            )
        return super().outcome(answer)


provider_register(Slack())
provider_register(Teams())
