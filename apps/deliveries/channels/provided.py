"""Channels whose messages a configured provider carries: SMS, push and chat."""

from __future__ import annotations

import re

from rest_framework import serializers

from apps.core.encryption import seal
from apps.core.masking import url_mask
from apps.core.templating import render

from .base import Channel, DeliveryError, Rendered, SendResult, TemplateField, recipient_address


class ProvidedChannel(Channel):
    """Sends each delivery through the provider its product (or organization) configured for the channel,
    all of a batch at once."""

    def send_many(self, deliveries) -> list[SendResult | DeliveryError]:
        from apps.deliveries import outbound
        from apps.deliveries.providers import provider_for

        results: list = [None] * len(deliveries)
        posts, waiting, memo = [], [], {}  # waiting: (index, provider, how many requests)
        for i, delivery in enumerate(deliveries):
            configured = provider_for(delivery, memo)
            if configured is None:
                results[i] = DeliveryError(f"No {self.kind} provider is configured for this product "
                                           f"(PUT /api/v1/providers/{self.kind}).", permanent=True)
                continue
            try:
                requests = configured.provider.requests(delivery.payload, configured.credentials, configured.options)
            except DeliveryError as exc:
                results[i] = exc
                continue
            posts.extend(requests)
            waiting.append((i, configured.provider, len(requests)))
        answers = iter(outbound.post_many(posts))
        for i, provider, count in waiting:
            outcomes = [DeliveryError(a.message, permanent=a.permanent) if isinstance(a, outbound.OutboundError)
                        else provider.outcome(a) for a in (next(answers) for _ in range(count))]
            results[i] = outcomes[0] if count == 1 else _devices_outcome(outcomes)
        return results


def _devices_outcome(outcomes: list) -> SendResult | DeliveryError:
    """A push to several devices: sent if any device accepted it (the others are named in the excerpt).
    Otherwise it failed, and it is retried only if some device may still accept it. A retry resends to
    every device, and none of them has had the message yet."""
    accepted = [o for o in outcomes if isinstance(o, SendResult)]
    refused = [o for o in outcomes if isinstance(o, DeliveryError)]
    if accepted:
        excerpt = f"{len(accepted)} of {len(outcomes)} devices accepted it."
        if refused:
            excerpt += " Refused: " + "; ".join(r.message for r in refused[:5])
        return SendResult(status="sent", status_code=accepted[0].status_code, excerpt=excerpt[:1024],
                          duration_ms=max(o.duration_ms for o in outcomes))
    transient = [r for r in refused if not r.permanent]
    first = (transient or refused)[0]
    return DeliveryError(f"No device accepted it ({len(refused)} refused); first: {first.message}",
                         permanent=not transient, status_code=first.status_code, excerpt=first.excerpt,
                         retry_after=max((r.retry_after for r in transient if r.retry_after), default=None))


class SmsChannel(ProvidedChannel):
    """A text message to the recipient's phone (E.164)."""

    kind = "sms"

    class StepConfig(serializers.Serializer):
        to = TemplateField(required=False, default="{{ recipient.phone }}", max_length=1000)
        text = TemplateField(max_length=5000)

    def render(self, *, config: dict, context: dict, product, memo: dict | None = None) -> Rendered:
        from apps.deliveries.providers import E164

        to, skip = recipient_address(config, context, "phone number")
        if skip:
            return Rendered(skip_reason=skip)
        if not E164.match(to):
            return Rendered(skip_reason=f"'{to}' is not an E.164 phone number.")
        return Rendered(target=to, payload={"to": to, "text": render(config["text"], context)})


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
                [recipient["push_token"]] if recipient.get("push_token") else [])
        tokens = list(dict.fromkeys(str(t) for t in tokens))[:MAX_DEVICES]
        if not tokens:
            return Rendered(skip_reason="The recipient has no push token.")
        target = tokens[0] if len(tokens) == 1 else f"{len(tokens)} devices"
        return Rendered(target=target[:2000], payload={
            "tokens": tokens, "title": " ".join(render(config["title"], context).split()),
            "body": render(config["body"], context)})
