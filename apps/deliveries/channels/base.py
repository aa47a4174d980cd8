from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from rest_framework import serializers

from apps.core import exactjson
from apps.core.masking import sealed_masked
from apps.core.templating import MissingVariable, render, template_check
from apps.core.text import storable

if TYPE_CHECKING:
    from apps.deliveries.models import Delivery
    from apps.tenants.models import Product

logger = logging.getLogger(__name__)


class DeliveryError(Exception):
    """A failed send. `permanent` failures are not retried; the others are, with back-off. `message` and
    `excerpt` may quote a receiver: they are made storable here (apps.core.text.storable), before anything
    records them."""

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        status_code: int | None = None,
        excerpt: str = "",
        duration_ms: int = 0,
        retry_after: float | None = None,
    ):
        message, excerpt = storable(message), storable(excerpt)
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.status_code = status_code
        self.excerpt = excerpt
        self.duration_ms = duration_ms
        self.retry_after = retry_after
        self.provider = ""  # who carried it (set by the channel): the metrics' `provider` label


@dataclass
class SendResult:
    status: str  # the delivery status it reached: "sent" (handed over) or "delivered" (receiver accepted)
    status_code: int | None = None
    excerpt: str = ""
    duration_ms: int = 0
    provider_message_id: str = ""  # the provider's own id for the message, when it gives one
    provider: str = ""  # who carried it (set by the channel): the metrics' `provider` label

    def __post_init__(self):
        # Both come from the receiver or provider: made storable before anything records them.
        self.excerpt, self.provider_message_id = storable(self.excerpt), storable(self.provider_message_id)


def outcome_guarded(read, *args) -> SendResult | DeliveryError:
    """`read(*args)`, the outcome of one answer; an unexpected error while reading it (a bug, an answer of a
    shape nobody foresaw) is that delivery's failure, retried, not the batch's: the other deliveries of the
    batch keep their outcomes, and nothing is sent twice for it."""
    try:
        return read(*args)
    except Exception as exc:
        logger.exception("Reading an answer failed")
        return DeliveryError(f"Rowbell could not read the answer ({exc.__class__.__name__}: {exc}); it will retry.")


@dataclass
class Rendered:
    """A notify step rendered for one recipient: what to send where, or why nothing is sent."""

    target: str = ""
    payload: dict[str, Any] = field(default_factory=dict)
    endpoint_id: Any = None
    skip_reason: str = ""
    endpoint: Any = None  # the endpoint itself, when the channel loaded it (sending needs its secret)


class TemplateField(serializers.CharField):
    """A user template: checked for syntax when the workflow is saved."""

    def __init__(self, *, html: bool = False, **kwargs):
        self.html = html
        kwargs.setdefault("max_length", 100_000)
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        problem = template_check(value, html=self.html)
        if problem:
            raise serializers.ValidationError(problem)
        return value


class Channel:
    """Base class of every delivery channel.

    - `StepConfig`: the typed fields a notify step on this channel takes (besides id/type/channel).
    - `render`: fill the step's templates for one recipient.
    - `send_many`: one try for each delivery of a batch (a channel sends them together: concurrently over
      pooled connections, or over one provider connection); the outcomes (SendResult or DeliveryError) in
      the same order. A channel that raises fails the whole batch's try, which is retried.
    """

    kind: ClassVar[str]

    class StepConfig(serializers.Serializer):
        pass

    def step_config(self, step: dict, *, product: Product) -> serializers.Serializer:
        return self.StepConfig(data=step, context={"product": product})

    def render(self, *, config: dict, context: dict, product: Product, memo: dict | None = None) -> Rendered:
        """`memo` is shared by the renders of one batch of runs: a channel may keep lookups in it."""
        raise NotImplementedError

    def send_many(self, deliveries: list[Delivery]) -> list[SendResult | DeliveryError]:
        raise NotImplementedError

    def recipient_errors(self, recipient: dict) -> dict[str, list[str]]:
        """The channel's rules for the recipient properties it reads (a trigger call's `to`): {field: [reason]}
        for each property present and wrong; properties it does not read are not its business."""
        return {}

    def prepare(self, delivery: Delivery, *, definition: dict, memo: dict | None = None) -> None:
        """Last touches to a queued delivery built from a run of a workflow with `definition`, before it is
        saved (e.g. email engagement tracking). Changes `delivery` in place. `memo` is shared by the deliveries
        built together."""

    def preview(self, delivery: Delivery) -> dict:
        """What the recipient would see, for the review queue: a dict with `kind` (the template part to show:
        "email", "sms", "push", "chat" or "json") and its fields. An `html` field is shown only in a
        sandboxed frame."""

        return {
            "kind": "json",
            "to": delivery.target,
            "body": exactjson.dumps(
                sealed_masked(delivery.payload or {}), indent=2, sort_keys=True, ensure_ascii=False
            ),
        }


def recipient_address(config: dict, context: dict, what: str) -> tuple[str, str]:
    """The step's `to`, rendered: (address, "") or ("", why the recipient is skipped).

    A recipient without the address is skipped, not an error in the workflow: the `to` renders empty, or
    names a property of `recipient` that this recipient lacks (`recipient.email`, `recipient.contact.email`:
    MissingVariable.rooted_in). Anything else the `to` names and the run lacks (`row`, `row.email`,
    `data.email`), and every other template error, is the workflow's: TemplateRenderError is raised, and
    the step fails."""
    try:
        to = render(config["to"], context).strip()
    except MissingVariable as exc:
        if not exc.rooted_in("recipient"):
            raise
        return "", f"The recipient has no {what} ({exc})."
    return (to, "") if to else ("", f"The recipient has no {what}.")


def context_value(context: dict, name: str) -> Any:
    """A top-level value of the template context that a channel reads itself (not through a template);
    MissingVariable (a TemplateRenderError: the step fails) naming it if the run lacks it."""
    try:
        return context[name]
    except KeyError:
        raise MissingVariable(name, top_level=True) from None


_REGISTRY: dict[str, Channel] = {}


def register(channel: Channel) -> None:
    _REGISTRY[channel.kind] = channel


def channel_get(kind: str) -> Channel:
    return _REGISTRY[kind]


def channel_kinds() -> list[str]:
    return sorted(_REGISTRY)
