from django.db import models

from .exactjson import ExactDecoder, ExactEncoder


class ActionStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SUPERSEDED = "superseded"  # a later change made it moot (e.g. an endpoint disabled after enabling was asked)


class QueuedAction(models.Model):
    """An operator's action that reaches outside Rowbell's own database (a customer database): asked for in
    the admin, done by a worker (apps.core.actions). The row is the record; the Celery message only a hint,
    re-sent by the reconciler when lost. Actions on one target run in the order they were asked for."""

    name = models.CharField(max_length=64)
    target_type = models.CharField(max_length=40)
    target_id = models.CharField(max_length=64)
    # Exact numbers: a backfill's `after` may be a numeric(30,20) key (apps.core.exactjson).
    args = models.JSONField(default=dict, blank=True, encoder=ExactEncoder, decoder=ExactDecoder)
    actor = models.CharField(max_length=120)
    status = models.CharField(max_length=20, choices=ActionStatus.choices, default=ActionStatus.QUEUED)
    requested_at = models.DateTimeField(auto_now_add=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    # Bumped by every claim: a worker records the outcome only while the action still carries the claim it
    # took, so one whose lease expired (and whose action another worker took) writes nothing.
    attempt = models.PositiveIntegerField(default=0)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.JSONField(null=True, blank=True, encoder=ExactEncoder, decoder=ExactDecoder)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(
                fields=["target_type", "target_id", "id"],
                name="action_unfinished",
                condition=models.Q(status__in=["queued", "running"]),
            ),
        ]

    def __str__(self):
        return f"{self.name} {self.target_type}:{self.target_id} ({self.status})"


class MetricCounter(models.Model):
    """The running total of one Prometheus counter series (a counter, or a histogram's bucket, sum or count),
    kept in the database beside the work it counts: written in the same transaction, so it survives restarts,
    counts the work of every process and host once, and never runs backwards when old rows are pruned.

    `labels` is the series' label set as the exposition writes it (`channel="email",outcome="success"`). Each
    process adds to its own `shard` (of SHARDS, by process id) so that two workers never wait on one row; the
    exposition sums the shards (apps.core.metrics)."""

    name = models.CharField(max_length=100)
    labels = models.CharField(max_length=500, blank=True, default="")
    shard = models.SmallIntegerField(default=0)
    value = models.FloatField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["name", "labels", "shard"], name="metric_series_shard")]

    def __str__(self):
        return f"{self.name}{{{self.labels}}} {self.value}"
