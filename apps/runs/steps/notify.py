"""`notify`: render the step's templates for the run's recipient and make one delivery on its channel.

The run waits for a queued (or held) delivery: it goes on once the delivery is sent, and fails if it
fails for good. A skipped one (the recipient has no address for the channel, a disabled endpoint) lets it
go on at once. A template naming something the run lacks is not a skip: the step fails (notify_render).
"""

from __future__ import annotations

from apps.core.masking import sealed_masked
from apps.core.templating import MissingVariable, TemplateLimitError, TemplateRenderError, render_budget
from apps.deliveries.channels import Rendered, channel_get
from apps.deliveries.models import DeliveryStatus
from apps.deliveries.services import delivery_build

from ..models import WaitingOn
from .base import StepCall, StepFailed, StepOutcome, StepType, step_type_register


def notify_render(*, run, step: dict, context: dict, memo: dict | None = None) -> Rendered:
    """Fill a notify step's templates for a run: a Rendered, skipped only when the recipient has no
    address for the channel (or the channel's own reasons: an endpoint gone or disabled).

    Raises StepFailed (the run fails and is escalated) when a template cannot render: one that names
    something the run lacks (`row`, `data.order`, a `to` of `{{ row.email }}`), one that trips a bound of
    its render (time, size), any other template error. The message names the step, the field and what is
    missing, e.g. "Step 'mail', field 'subject': Missing variable 'order' (data.order)." The step's
    templates share one time budget (ROWBELL_TEMPLATE_RENDER_SECONDS)."""
    config = {k: v for k, v in step.items() if k not in ("id", "type", "channel")}
    try:
        with render_budget():
            return channel_get(step["channel"]).render(
                config=config, context={**context, "step": step["id"]}, product=run.product, memo=memo
            )
    except TemplateRenderError as exc:
        raise StepFailed(_failure(step, config, exc)) from exc


def _failure(step: dict, config: dict, exc: TemplateRenderError) -> str:
    """Why the step fails, for the run's error and its escalation: the step, the field, what is missing."""
    field = next((k for k, v in config.items() if exc.source is not None and v == exc.source), None)
    where = f"Step '{step['id']}'" + (f", field '{field}'" if field else "")
    if isinstance(exc, MissingVariable) and exc.where != str(exc.name):
        return f"{where}: Missing variable '{exc.name}' ({exc.where})."
    return f"{where}: {exc}"


class NotifyStep(StepType):
    name = "notify"
    batchable = True

    def execute(self, call: StepCall) -> StepOutcome:
        run, step = call.run, call.step
        rendered = notify_render(run=run, step=step, context=call.context, memo=call.memo)
        policy = run.workflow_version.definition.get("retry", {})
        delivery, audit = delivery_build(
            channel=step["channel"],
            rendered=rendered,
            run=run,
            step_id=step["id"],
            held=call.sandboxed,
            retry=policy,
            memo=call.memo,
        )
        call.deliver(delivery, audit)
        output = {"delivery": delivery.message_id, "status": delivery.status}
        if delivery.status in (DeliveryStatus.QUEUED, DeliveryStatus.HELD):
            # The run goes on once the delivery is sent; if it fails for good, so does the run.
            return StepOutcome(output=output, waiting_on=WaitingOn.DELIVERY)
        return StepOutcome(output=output)

    @staticmethod
    def preview(*, step: dict, context: dict, product) -> dict:
        """What the step would send with this sample, sending and recording nothing: {"channel", "target",
        "payload"} (secrets masked), or {"channel", "skipped": why} or {"channel", "error": why}. A template
        that trips a bound of its render raises TemplateLimitError (its `source` says which template)."""
        config = {k: v for k, v in step.items() if k not in ("id", "type", "channel")}
        item = {"channel": step["channel"]}
        try:
            with render_budget():  # as the run would: the step's templates share one budget
                rendered = channel_get(step["channel"]).render(
                    config=config, context={**context, "step": step["id"]}, product=product
                )
        except TemplateLimitError:
            raise
        except TemplateRenderError as exc:
            item["error"] = str(exc)
        else:
            if rendered.skip_reason:
                item["skipped"] = rendered.skip_reason
            else:
                item.update(target=rendered.target, payload=sealed_masked(rendered.payload))
        return item


step_type_register(NotifyStep())
