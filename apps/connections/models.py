import uuid

from django.db import models

from apps.core import exactjson
from apps.core.encryption import EncryptedTextField
from apps.core.exactjson import ExactDecoder, ExactEncoder

# A pg_snapshot in which no transaction is visible (xids start at 3): a new connection reads its whole log.
NOTHING_CONSUMED = "1:1:"


class SslMode(models.TextChoices):
    DISABLE = "disable"
    ALLOW = "allow"
    PREFER = "prefer"
    REQUIRE = "require"
    VERIFY_CA = "verify-ca"
    VERIFY_FULL = "verify-full"


class LiveConnections(models.Manager):
    """Connections not deleted: what every API, poller and page sees."""

    def get_queryset(self):
        return super().get_queryset().filter(deleted_at__isnull=True)


class Connection(models.Model):
    """A customer's PostgreSQL database, reached with a dedicated minimal-permission user.

    The password is encrypted at rest and never leaves Rowbell: not in API answers, logs or the admin.
    A deleted connection keeps its row (its events, runs and deliveries stay readable) with `deleted_at` set;
    `objects` leaves it out, `all_objects` does not.
    """

    objects = LiveConnections()
    all_objects = models.Manager()

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    product = models.ForeignKey("tenants.Product", on_delete=models.PROTECT, related_name="connections")
    name = models.CharField(max_length=200)
    host = models.CharField(max_length=255)
    port = models.PositiveIntegerField(default=5432)
    database = models.CharField(max_length=63)
    user = models.CharField(max_length=63)
    password = EncryptedTextField(blank=True)
    sslmode = models.CharField(max_length=20, choices=SslMode.choices, default=SslMode.PREFER)
    # Rowbell's own schema in the customer database (event log, trigger functions).
    schema = models.CharField(max_length=63, default="rowbell")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    capture_installed_at = models.DateTimeField(null=True, blank=True)
    # Pick-up reads the customer's event log in batches closed between two snapshots (apps/connections/
    # pickup.py): every event whose transaction is visible in `consumed_snapshot` has been read; the batch
    # being read page by page ends at `batch_snapshot` (empty: none open), and (cursor_xid, cursor_id) is
    # the last event read in it ((0, 0): none yet).
    consumed_snapshot = models.TextField(
        default=NOTHING_CONSUMED, help_text="pg_snapshot (xmin:xmax:xip,...): its visible events are read."
    )
    batch_snapshot = models.TextField(
        blank=True, default="", help_text="pg_snapshot ending the batch being read; empty when none is."
    )
    cursor_xid = models.DecimalField(
        max_digits=20, decimal_places=0, default=0, help_text="Transaction id of the last event read in the open batch."
    )
    cursor_id = models.BigIntegerField(default=0, help_text="Id of the last event read in the open batch.")
    # The poller's last read and its last failure.
    last_poll_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    # Health, as the last check read it from the customer database (the admin shows these; reading them
    # live would put network I/O in every page view): events written but not read yet, the age of the
    # oldest of them, and the last full check (connection checks and trigger drift).
    backlog = models.BigIntegerField(null=True, blank=True)
    lag_seconds = models.FloatField(null=True, blank=True, help_text="Age of the oldest event not read yet.")
    health_checked_at = models.DateTimeField(null=True, blank=True)
    check_report = models.JSONField(default=dict, blank=True)
    # Drift (see drift.py): the problems the last health tick found, since when they stand, and the last
    # error event of each capture whose trigger could not evaluate ({capture: {...}}).
    capture_problems = models.JSONField(default=list, blank=True)
    capture_problems_since = models.DateTimeField(null=True, blank=True)
    capture_errors = models.JSONField(default=dict, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        permissions = [("operate_connection", "Can check connections and repair their triggers")]
        base_manager_name = "all_objects"
        constraints = [
            models.UniqueConstraint(
                fields=["product", "name"],
                condition=models.Q(deleted_at__isnull=True),
                name="connection_name_per_product",
            )
        ]

    def __str__(self):
        return f"{self.name} ({self.user}@{self.host}:{self.port}/{self.database})"


class Event(models.Model):
    """A row change read from a customer's event log: one per statement and capture, with the row ids.

    (connection, xid, source_id) is unique: reading the same log row twice records it once, and a log
    that was dropped and installed again (its ids restart) cannot collide with older events.
    """

    connection = models.ForeignKey(
        Connection, on_delete=models.CASCADE, related_name="events", db_index=False
    )  # event_once
    source_id = models.BigIntegerField()
    xid = models.DecimalField(max_digits=20, decimal_places=0)
    capture = models.CharField(max_length=63)
    table_name = models.CharField(max_length=127)
    op = models.CharField(max_length=10)
    # Keys keep their JSON type and every digit (a numeric(30,20) key is not a float).
    ids = models.JSONField(encoder=ExactEncoder, decoder=ExactDecoder)
    # Error events (a trigger that could not evaluate): {"op", "sqlstate", "message", "rows"}; TRUNCATE of a
    # partition: {"partition"}.
    detail = models.JSONField(null=True, blank=True)
    captured_at = models.DateTimeField()
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["connection_id", "xid", "source_id"]
        constraints = [models.UniqueConstraint(fields=["connection", "xid", "source_id"], name="event_once")]
        # Retention takes a connection's oldest recorded events first (apps.runs.retention).
        indexes = [models.Index(fields=["connection", "recorded_at"], name="event_connection_recorded")]

    def __str__(self):
        return f"{self.op} {self.table_name} {exactjson.dumps(self.ids)}"
