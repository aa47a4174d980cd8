"""Channels whose messages a configured provider carries: SMS, push and chat."""

from __future__ import annotations

from rest_framework import serializers

from apps.workflows.templating import render

from .base import BatchChannel, DeliveryError, Rendered, SendResult, TemplateField, recipient_address


class ProvidedChannel(BatchChannel):
    """Sends each delivery through the provider its product (or organization) configured for the channel,
    all of a batch at once."""

    def send_many(self, deliveries) -> list[SendResult | DeliveryError]:
        from apps.deliveries import outbound
        from apps.deliveries.providers import provider_for

        results: list = [None] * len(deliveries)
        posts, waiting, memo = [], [], {}
        for i, delivery in enumerate(deliveries):
            configured = provider_for(delivery, memo)
            if configured is None:
                results[i] = DeliveryError(f"No {self.kind} provider is configured for this product "
                                           f"(PUT /api/v1/providers/{self.kind}).", permanent=True)
                continue
            try:
                posts.append(configured.provider.request(delivery.payload, configured.credentials, configured.options))
            except DeliveryError as exc:
                results[i] = exc
                continue
            waiting.append((i, configured.provider))
        for (i, provider), answer in zip(waiting, outbound.post_many(posts)):
            results[i] = (DeliveryError(answer.message, permanent=answer.permanent)
                          if isinstance(answer, outbound.OutboundError) else provider.outcome(answer))
        return results


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
    """A message to the team chat the product configured (Slack or Microsoft Teams incoming webhook)."""

    kind = "chat"

    class StepConfig(serializers.Serializer):
        text = TemplateField(max_length=10000)
        title = TemplateField(required=False, max_length=500)

    def render(self, *, config: dict, context: dict, product, memo: dict | None = None) -> Rendered:
        payload = {"text": render(config["text"], context)}
        if config.get("title"):
            payload["title"] = " ".join(render(config["title"], context).split())
        return Rendered(target="team chat", payload=payload)


class PushChannel(ProvidedChannel):
    """A push notification to one device of the recipient (its `push_token` by default)."""

    kind = "push"

    class StepConfig(serializers.Serializer):
        to = TemplateField(required=False, default="{{ recipient.push_token }}", max_length=1000)
        title = TemplateField(max_length=500)
        body = TemplateField(max_length=4000)

    def render(self, *, config: dict, context: dict, product, memo: dict | None = None) -> Rendered:
        to, skip = recipient_address(config, context, "push token")
        if skip:
            return Rendered(skip_reason=skip)
        return Rendered(target=to[:2000], payload={"to": to, "title": " ".join(render(config["title"], context).split()),
                                                   "body": render(config["body"], context)})
