"""The webhook channel: signed JSON POSTs (Standard Webhooks) to a product's endpoints."""

from __future__ import annotations

from django.utils import timezone
from rest_framework import serializers

from apps.core import exactjson
from apps.core import fields as strict
from apps.core.masking import sealed_masked
from apps.deliveries import outbound
from apps.deliveries.models import ENDPOINT_DISABLED
from apps.deliveries.signing import signature_headers

from ..base import Channel, DeliveryError, Rendered, SendResult, context_value, outcome_guarded

# Answers after which retrying cannot help: the receiver says the endpoint is gone.
PERMANENT_STATUSES = frozenset({410})


def webhook_body(payload: dict) -> bytes:
    """The exact bytes sent: compact JSON, numbers with every digit (a row key may be a numeric(30,20)).
    Retries re-serialize the same stored payload."""
    return exactjson.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def webhook_payload(context: dict) -> dict:
    """The JSON a webhook step sends, from the run's template context: {"type": "workflow.notification",
    "timestamp", "data": {"workflow", "version", "step", "request_id", "recipient" (sealed values masked),
    "data", and "event" for a run launched by a database event, "batch" ({"key", "items", "count"}, items'
    sealed values masked) after a batch step}}. Raises MissingVariable naming what the context lacks."""
    workflow = context_value(context, "workflow")
    data = {
        "workflow": workflow["key"],
        "version": workflow["version"],
        "step": context_value(context, "step"),
        "request_id": context_value(context, "request_id"),
        "recipient": sealed_masked(context_value(context, "recipient")),
        "data": context_value(context, "data"),
    }
    if "event" in context:  # a run launched by a database event
        data["event"] = context["event"]
    if "batch" in context:  # after a batch step: the digest's items (each run's data, recipient, event, row)
        batch = context["batch"]
        data["batch"] = {"key": batch["key"], "items": sealed_masked(batch["items"]), "count": batch["count"]}
    return {"type": "workflow.notification", "timestamp": context_value(context, "timestamp"), "data": data}


class WebhookChannel(Channel):
    """A signed JSON POST (Standard Webhooks). Success is HTTP 200 only, unless the endpoint opts in
    to any 2xx. Redirects are not followed. Every other answer is retried, except 410 (gone)."""

    kind = "webhook"

    class StepConfig(serializers.Serializer):
        webhook = strict.UUIDField(help_text="Id of one of the product's webhook endpoints.")

        def validate_webhook(self, value):
            from apps.deliveries.models import WebhookEndpoint

            if not WebhookEndpoint.objects.filter(id=value, product=self.context["product"]).exists():
                raise serializers.ValidationError("No webhook endpoint with this id in this product.")
            return str(value)

    def render(self, *, config: dict, context: dict, product, memo: dict | None = None) -> Rendered:
        from apps.deliveries.models import WebhookEndpoint

        key = ("webhook-endpoint", config["webhook"], product.id)
        if memo is not None and key in memo:
            endpoint = memo[key]
        else:
            endpoint = (
                WebhookEndpoint.objects.filter(id=config["webhook"], product=product)
                .only(
                    "id",
                    "url",
                    "enabled",
                    "secret",
                    "previous_secret",
                    "previous_secret_until",
                    "accept_any_2xx",
                    "retry_schedule",
                )
                .first()
            )
            if memo is not None:
                memo[key] = endpoint
        if endpoint is None:
            return Rendered(skip_reason="The webhook endpoint no longer exists.")
        payload = webhook_payload(context)
        # Rendered in full even for a disabled endpoint: enabling it again replays what was skipped.
        # The delivery's target is for display: the URL it is sent to is read from the endpoint.
        return Rendered(
            target=endpoint.url_masked,
            payload=payload,
            endpoint_id=endpoint.id,
            endpoint=endpoint,
            skip_reason="" if endpoint.enabled else ENDPOINT_DISABLED,
        )

    def send_many(self, deliveries) -> list[SendResult | DeliveryError]:
        """Every delivery of the batch goes out at once on the process's event loop."""
        now = timezone.now()
        timestamp = int(now.timestamp())
        posts = []
        for delivery in deliveries:
            body = webhook_body(delivery.payload)
            headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
            headers.update(
                signature_headers(delivery.endpoint.signing_secrets(now), delivery.message_id, timestamp, body)
            )
            posts.append(outbound.Post(delivery.endpoint.url, body, headers))
        outcomes = [
            outcome_guarded(_outcome, d.endpoint, answer) for d, answer in zip(deliveries, outbound.post_many(posts))
        ]
        for outcome in outcomes:
            outcome.provider = "webhook"
        return outcomes


def _outcome(endpoint, answer) -> SendResult | DeliveryError:
    if isinstance(answer, outbound.OutboundError):
        return DeliveryError(answer.message, permanent=answer.permanent)
    ok = answer.status == 200 or (endpoint.accept_any_2xx and 200 <= answer.status < 300)
    if ok:
        return SendResult(
            status="delivered", status_code=answer.status, excerpt=answer.excerpt, duration_ms=answer.duration_ms
        )
    if 300 <= answer.status < 400:
        # An internal destination's headers are its words too: not quoted (outbound.answers_shown).
        where = answer.header("location") if answer.shown else "not shown"
        reason = f"HTTP {answer.status}: redirects are not followed (Location: {where})"
    elif 200 <= answer.status < 300:
        reason = f"HTTP {answer.status}: only 200 counts as success for this endpoint"
    else:
        reason = f"HTTP {answer.status}"
    return DeliveryError(
        reason,
        permanent=answer.status in PERMANENT_STATUSES,
        status_code=answer.status,
        excerpt=answer.excerpt,
        duration_ms=answer.duration_ms,
        retry_after=outbound.retry_after_seconds(answer.header("retry-after")),
    )
