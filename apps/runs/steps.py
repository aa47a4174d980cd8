"""Step executors, by step type. Each runs inside the transaction that records the step as done."""

from __future__ import annotations

from typing import Callable

from apps.deliveries.channels import channel_get
from apps.deliveries.services import delivery_create


class StepFailed(Exception):
    """A step that cannot succeed (e.g. a template error): the run fails without retrying."""


def notify_execute(*, run, step: dict, context: dict) -> dict:
    from apps.workflows.templating import TemplateRenderError

    channel = channel_get(step["channel"])
    config = {k: v for k, v in step.items() if k not in ("id", "type", "channel")}
    try:
        rendered = channel.render(config=config, context={**context, "step": step["id"]}, product=run.product)
    except TemplateRenderError as exc:
        raise StepFailed(f"Step '{step['id']}': {exc}") from exc
    delivery = delivery_create(run=run, step_id=step["id"], channel=step["channel"], rendered=rendered)
    return {"delivery": delivery.message_id, "status": delivery.status}


STEP_EXECUTORS: dict[str, Callable] = {"notify": notify_execute}
