"""`batch`: runs reaching it with the same key within the window are collected; the first one (the
owner) continues once the window closes, with all of them in `batch.items` (and `batch.count`); the
others end there, completed: a digest.

It locks and writes its own rows (the open batch of a key), so it is not batchable: a batch of runs
hands a run that reaches it over to a transaction of its own (apps.runs.engine).
"""

from __future__ import annotations

from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.workflows.conditions import path_get

from ..models import Batch, BatchItem, BatchStatus, WaitingOn
from .base import StepCall, StepFailed, StepOutcome, StepRetry, StepType, step_type_register


class BatchStep(StepType):
    name = "batch"
    batchable = False

    def execute(self, call: StepCall) -> StepOutcome:
        """First visit: join the open batch of this key, or open one and wait for its window to close.
        Second visit (the owner, after the window): close it and carry on with every item."""
        run, step, context = call.run, call.step, call.context
        now = timezone.now()
        version = run.workflow_version
        owned = run.state.get("batch_owned", {}).get(step["id"])
        if owned:
            batch = Batch.objects.select_for_update().get(id=owned)
            if batch.status == BatchStatus.OPEN:
                Batch.objects.filter(id=batch.id).update(status=BatchStatus.CLOSED)
            items = list(BatchItem.objects.filter(batch=batch).order_by("id").values_list("item", flat=True))
            context["batch"] = {"key": batch.key, "items": items, "count": len(items)}
            run.state["batch"] = context["batch"]
            return StepOutcome(output={"batch": batch.id, "count": len(items)})
        key = path_get(context, step["key"])
        if key is None or isinstance(key, (dict, list)):
            raise StepFailed(
                f"Step '{step['id']}': the batching key {step['key']} is "
                f"{'missing' if key is None else 'not a plain value'}."
            )
        key = str(key)[:200]
        item = {k: context[k] for k in ("data", "recipient", "event", "row") if context.get(k) is not None}
        item["run_id"] = run.id
        for _ in range(3):
            batch = (
                Batch.objects.select_for_update()
                .filter(workflow_version=version, step_id=step["id"], key=key, status=BatchStatus.OPEN)
                .first()
            )
            if batch is not None:
                if batch.size < step["max_items"]:
                    BatchItem.objects.create(batch=batch, run=run, item=item)
                    Batch.objects.filter(id=batch.id).update(size=batch.size + 1)
                    return StepOutcome(output={"batched_into": batch.owner_id, "batch": batch.id}, end_run=True)
                # Full: close it early (its owner carries on at its window's end) and open the next one.
                Batch.objects.filter(id=batch.id).update(status=BatchStatus.CLOSED)
            try:
                with transaction.atomic():
                    batch = Batch.objects.create(
                        workflow_version=version,
                        step_id=step["id"],
                        key=key,
                        owner=run,
                        closes_at=now + timedelta(seconds=step["window"]),
                        size=1,
                    )
            except IntegrityError:
                continue  # another run opened it meanwhile: join that one
            BatchItem.objects.create(batch=batch, run=run, item=item)
            run.state.setdefault("batch_owned", {})[step["id"]] = batch.id
            return StepOutcome(finished=False, waiting_on=WaitingOn.BATCH, resume_at=batch.closes_at)
        raise StepRetry(f"Step '{step['id']}': the batch for key {key!r} is contended; trying again.")


step_type_register(BatchStep())
