import uuid

from django.db import models

from apps.core.exactjson import ExactDecoder, ExactEncoder


class Priority(models.TextChoices):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class RequestStatus(models.TextChoices):
    ACCEPTED = "accepted"  # recorded; its runs are not created yet
    STARTED = "started"  # its runs exist; their progress is the request's progress


class TriggerRequest(models.Model):
    """One accepted trigger call: the durable record that the worker turns into runs."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Requests are read by id; single-column indexes on these keys would only slow the hot insert.
    product = models.ForeignKey("tenants.Product", on_delete=models.PROTECT, related_name="+", db_index=False)
    organization = models.ForeignKey(
        "tenants.Organization", null=True, blank=True, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    workflow_version = models.ForeignKey(
        "workflows.WorkflowVersion", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.NORMAL)
    recipients = models.JSONField()
    data = models.JSONField(default=dict)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    body_hash = models.CharField(max_length=64)
    status = models.CharField(max_length=20, choices=RequestStatus.choices, default=RequestStatus.ACCEPTED)
    actor = models.CharField(max_length=120)
    # When the dispatcher sent its Celery hint; NULL until then.
    enqueued_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # NULLS NOT DISTINCT: a B2C product (no organization) gets one request per key too.
            models.UniqueConstraint(
                fields=["product", "organization", "idempotency_key"],
                name="request_idempotency_key",
                condition=models.Q(idempotency_key__isnull=False),
                nulls_distinct=False,
            ),
        ]
        indexes = [
            # Hinted but not started: the reconciler re-sends hints older than the requeue threshold.
            models.Index(fields=["enqueued_at"], name="request_accepted", condition=models.Q(status="accepted")),
            # Retention takes a product's oldest requests first (apps.runs.retention).
            models.Index(fields=["product", "created_at"], name="request_product_created"),
            # Not hinted yet: what the dispatcher claims, oldest first within each priority.
            models.Index(
                fields=["priority", "created_at"],
                name="request_undispatched",
                condition=models.Q(status="accepted", enqueued_at__isnull=True),
            ),
        ]

    def __str__(self):
        return str(self.id)


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"  # until `resume_at`, or until its delivery settles (`waiting_on`)
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class WaitingOn(models.TextChoices):
    NOTHING = ""
    TIME = "time"  # a wait step: resumes at resume_at
    CONDITION = "condition"  # a wait-until-condition step: checked again at resume_at
    RETRY = "retry"  # a step that failed transiently: tried again at resume_at
    BATCH = "batch"  # a batch this run owns: it closes at resume_at
    DELIVERY = "delivery"  # a notify step's delivery: resumes when it is sent, fails the run if it fails


class Run(models.Model):
    """A workflow version executed for one cause: a recipient of a trigger request, a database event...

    `source` names the trigger source that launched it (apps.runs.triggers: "api", "database") and
    `cause_id` the cause in that source's terms (the request's id, the event's id): a new source needs no
    new column. The `request` and `event` keys stay for what reads them (a request's status, the API's
    filters, a delivery's request). `step_index` is the next instruction of the version's program
    (apps.workflows.program) to execute; `state` holds what the steps produced (`steps`), the rows read
    for a database event, and the bookkeeping of waits and retries. A re-run is a new run with `rerun_of`
    set.
    """

    # A run's row changes state several times, and a change of status updates every index: keys that
    # are often empty have partial indexes, and none repeats the prefix of another (see Meta).
    request = models.ForeignKey(
        TriggerRequest, null=True, blank=True, on_delete=models.CASCADE, related_name="runs", db_index=False
    )
    event = models.ForeignKey(
        "connections.Event", null=True, blank=True, on_delete=models.PROTECT, related_name="runs", db_index=False
    )
    source = models.CharField(max_length=20, default="")
    cause_id = models.CharField(max_length=100, default="")
    recipient_index = models.PositiveIntegerField(default=0)
    product = models.ForeignKey("tenants.Product", on_delete=models.PROTECT, related_name="+")
    organization = models.ForeignKey(
        "tenants.Organization", null=True, blank=True, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    workflow_version = models.ForeignKey(
        "workflows.WorkflowVersion", on_delete=models.PROTECT, related_name="runs", db_index=False
    )
    recipient = models.JSONField()
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.NORMAL)
    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.QUEUED)
    step_index = models.PositiveIntegerField(default=0)
    # Holds the rows read by key and the ids not found: numbers keep every digit.
    state = models.JSONField(default=dict, blank=True, encoder=ExactEncoder, decoder=ExactDecoder)
    waiting_on = models.CharField(max_length=20, choices=WaitingOn.choices, default=WaitingOn.NOTHING, blank=True)
    resume_at = models.DateTimeField(null=True, blank=True)
    rerun_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="reruns", db_index=False
    )
    error = models.TextField(blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    # Bumped by every claim (queued -> running). A worker writes only while the run still carries the
    # claim it took: once its lease expired and another worker claimed the run, its writes match nothing.
    claim = models.PositiveIntegerField(default=0, db_default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        permissions = [("operate_run", "Can re-run, cancel and dismiss runs")]
        constraints = [
            # Re-runs are explicit (rerun_of set); otherwise one run per cause and recipient of a version,
            # whatever the source: one per recipient of a request (a request names its version), one per
            # (workflow version, event) (reading an event twice launches nothing twice).
            models.UniqueConstraint(
                fields=["workflow_version", "source", "cause_id", "recipient_index"],
                name="run_once_per_cause",
                condition=models.Q(rerun_of__isnull=True),
            ),
            models.CheckConstraint(condition=~models.Q(source="") & ~models.Q(cause_id=""), name="run_has_a_cause"),
        ]
        indexes = [
            models.Index(fields=["enqueued_at"], name="run_queued", condition=models.Q(status="queued")),
            models.Index(fields=["lease_until"], name="run_running", condition=models.Q(status="running")),
            models.Index(fields=["resume_at"], name="run_waiting", condition=models.Q(status="waiting")),
            models.Index(fields=["workflow_version", "status"], name="run_version_status"),
            models.Index(fields=["request"], name="run_request", condition=models.Q(request__isnull=False)),
            models.Index(fields=["event"], name="run_event", condition=models.Q(event__isnull=False)),
            models.Index(
                fields=["organization"], name="run_organization", condition=models.Q(organization__isnull=False)
            ),
            models.Index(fields=["rerun_of"], name="run_rerun_of", condition=models.Q(rerun_of__isnull=False)),
            # Retention takes a product's oldest runs first (apps.runs.retention).
            models.Index(fields=["product", "created_at"], name="run_product_created"),
        ]

    def __str__(self):
        return f"run {self.id} ({self.status})"


class StepStatus(models.TextChoices):
    COMPLETED = "completed"
    FAILED = "failed"


class RunStep(models.Model):
    """A step a run has executed, with what it produced or why it failed."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps", db_index=False)  # run_step_once
    step_id = models.CharField(max_length=64)
    index = models.PositiveIntegerField()
    type = models.CharField(max_length=20)
    status = models.CharField(max_length=20, choices=StepStatus.choices)
    output = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    finished_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run_id", "index"]
        constraints = [models.UniqueConstraint(fields=["run", "step_id"], name="run_step_once")]


class EscalationDecision(models.TextChoices):
    RERUN = "rerun"
    DISMISSED = "dismissed"


class Escalation(models.Model):
    """A failed run operators must be told about. The escalation task tells them once per failure,
    at most one notice per product per ROWBELL_ESCALATION_INTERVAL_SECONDS (the rest wait for the next)."""

    run = models.OneToOneField(Run, on_delete=models.CASCADE, related_name="escalation")
    product = models.ForeignKey("tenants.Product", on_delete=models.PROTECT, related_name="+")
    error = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    notified_at = models.DateTimeField(null=True, blank=True)
    # What operators decided: the run was re-run, or dismissed (nothing more to do). Until then it waits
    # on the dashboard.
    decision = models.CharField(max_length=20, choices=EscalationDecision.choices, blank=True, default="")
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.CharField(max_length=120, blank=True, default="")

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(
                fields=["product", "id"], name="escalation_pending", condition=models.Q(notified_at__isnull=True)
            ),
            models.Index(
                fields=["product", "id"], name="escalation_undecided", condition=models.Q(decided_at__isnull=True)
            ),
            models.Index(fields=["product", "-notified_at"], name="escalation_last_notice"),
        ]


class BatchStatus(models.TextChoices):
    OPEN = "open"
    CLOSED = "closed"


class Batch(models.Model):
    """The runs collected by a batch step for one key during one window. Its owner (the first run)
    continues once the window closes, with every item; the other runs end at the batch step."""

    workflow_version = models.ForeignKey("workflows.WorkflowVersion", on_delete=models.PROTECT, related_name="+")
    step_id = models.CharField(max_length=64)
    key = models.CharField(max_length=200)
    owner = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="+")
    closes_at = models.DateTimeField()
    status = models.CharField(max_length=10, choices=BatchStatus.choices, default=BatchStatus.OPEN)
    size = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "batches"
        constraints = [
            models.UniqueConstraint(
                fields=["workflow_version", "step_id", "key"], name="batch_open_once", condition=models.Q(status="open")
            )
        ]


class BatchItem(models.Model):
    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="items")
    run = models.OneToOneField(Run, on_delete=models.CASCADE, related_name="+")
    item = models.JSONField(encoder=ExactEncoder, decoder=ExactDecoder)  # the run's event and row, exact
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
