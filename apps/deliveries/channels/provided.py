"""The base of the channels whose messages a configured provider carries: SMS, push and chat."""

from __future__ import annotations

from .base import Channel, DeliveryError, SendResult, outcome_guarded


class ProvidedChannel(Channel):
    """Sends each delivery through the provider its product (or organization) configured for the channel,
    all of a batch at once."""

    def send_many(self, deliveries) -> list[SendResult | DeliveryError]:
        from apps.deliveries import outbound

        from .providers import provider_for

        results: list = [None] * len(deliveries)
        posts, waiting = [], []  # waiting: (index, provider, how many requests)
        memo: dict = {}  # provider_for's
        for i, delivery in enumerate(deliveries):
            configured = provider_for(delivery, memo)
            if configured is None:
                results[i] = DeliveryError(
                    f"No {self.kind} provider is configured for this product (PUT /api/v1/providers/{self.kind}).",
                    permanent=True,
                )
                continue
            try:
                requests = configured.provider.requests(delivery.payload, configured.credentials, configured.options)
            except DeliveryError as exc:
                exc.provider = configured.provider.name
                results[i] = exc
                continue
            posts.extend(requests)
            waiting.append((i, configured.provider, len(requests)))
        answers = iter(outbound.post_many(posts))
        for i, provider, count in waiting:
            outcomes = [
                DeliveryError(a.message, permanent=a.permanent)
                if isinstance(a, outbound.OutboundError)
                else outcome_guarded(provider.outcome, a)
                for a in (next(answers) for _ in range(count))
            ]
            results[i] = outcomes[0] if count == 1 else _devices_outcome(outcomes)
            results[i].provider = provider.name
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
        return SendResult(
            status="sent",
            status_code=accepted[0].status_code,
            excerpt=excerpt[:1024],
            duration_ms=max(o.duration_ms for o in outcomes),
        )
    transient = [r for r in refused if not r.permanent]
    first = (transient or refused)[0]
    return DeliveryError(
        f"No device accepted it ({len(refused)} refused); first: {first.message}",
        permanent=not transient,
        status_code=first.status_code,
        excerpt=first.excerpt,
        retry_after=max((r.retry_after for r in transient if r.retry_after), default=None),
    )
