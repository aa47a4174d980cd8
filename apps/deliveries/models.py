import uuid

from django.db import models

from apps.core.encryption import EncryptedTextField
from apps.core.exactjson import ExactDecoder, ExactEncoder
from apps.core.masking import url_mask

# Why a delivery to a disabled endpoint was skipped: such deliveries are replayed when it is enabled again.
ENDPOINT_DISABLED = "The webhook endpoint is disabled."


class WebhookEndpoint(models.Model):
    """Where a product's webhook deliveries go. The URL (a token can sit in its path or query) and the
    signing secret are encrypted at rest; `host` is kept in clear for search, and the URL is only ever
    shown masked (apps.core.masking.url_mask)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    product = models.ForeignKey("tenants.Product", on_delete=models.PROTECT, related_name="webhook_endpoints")
    url = EncryptedTextField(help_text="The full URL, encrypted at rest.")
    host = models.CharField(max_length=255, blank=True, default="", help_text="The URL's host, for search.")
    description = models.CharField(max_length=200, blank=True)
    secret = EncryptedTextField(help_text="whsec_... signing secret (encrypted at rest).")
    # After a rotation the previous secret signs too, until the overlap ends: receivers switch at leisure.
    previous_secret = EncryptedTextField(blank=True, default="")
    previous_secret_until = models.DateTimeField(null=True, blank=True)
    # Success is HTTP 200 only, unless the endpoint opts in to any 2xx.
    accept_any_2xx = models.BooleanField(default=False)
    enabled = models.BooleanField(default=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=500, blank=True)
    # Since when every attempt has failed (null: the last one succeeded), and how many have. Past the
    # configured span and count (ROWBELL_ENDPOINT_DISABLE_AFTER_SECONDS, _FAILURES) the endpoint is disabled
    # and operators are told.
    failing_since = models.DateTimeField(null=True, blank=True)
    failed_attempts = models.PositiveIntegerField(default=0, db_default=0)
    # Seconds before each retry of this endpoint's webhooks; null: the service's webhook schedule.
    retry_schedule = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Row events: the customer database and what to capture there ({table, events, columns}); the
    # capture name says which event-log rows are this endpoint's.
    connection = models.ForeignKey(
        "connections.Connection", null=True, blank=True, on_delete=models.PROTECT, related_name="webhook_endpoints"
    )
    source = models.JSONField(null=True, blank=True)
    capture = models.CharField(max_length=63, blank=True)
    capture_spec = models.JSONField(null=True, blank=True, help_text="The capture's full definition.")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["connection", "capture"], name="endpoint_capture")]
        permissions = [("operate_webhookendpoint", "Can disable, enable, rotate and replay webhook endpoints")]

    def __str__(self):
        return url_mask(self.url)

    @property
    def url_masked(self) -> str:
        return url_mask(self.url)

    def signing_secrets(self, now) -> list[str]:
        """The secrets a message is signed with now: the current one, and the previous one during the
        overlap that follows a rotation."""
        if self.previous_secret and self.previous_secret_until and now < self.previous_secret_until:
            return [self.secret, self.previous_secret]
        return [self.secret]


class DeliveryStatus(models.TextChoices):
    QUEUED = "queued"
    HELD = "held"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    OPENED = "opened"
    CLICKED = "clicked"
    FAILED = "failed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    SKIPPED = "skipped"
    DISCARDED = "discarded"


# Statuses after which nothing more will be sent.
FINAL_STATUSES = frozenset(
    {
        DeliveryStatus.SENT,
        DeliveryStatus.DELIVERED,
        DeliveryStatus.OPENED,
        DeliveryStatus.CLICKED,
        DeliveryStatus.FAILED,
        DeliveryStatus.BOUNCED,
        DeliveryStatus.COMPLAINED,
        DeliveryStatus.SKIPPED,
        DeliveryStatus.DISCARDED,
    }
)
# The one place that says what a status means. A delivery succeeded when the receiver took it (a webhook
# answered 200, a provider accepted the message) and nothing said otherwise since.
SUCCESS_STATUSES = frozenset(
    {DeliveryStatus.SENT, DeliveryStatus.DELIVERED, DeliveryStatus.OPENED, DeliveryStatus.CLICKED}
)
# Ended without reaching the person: given up, or reported back by the provider (the failure rate is these over
# everything that ended).
FAILURE_STATUSES = frozenset({DeliveryStatus.FAILED, DeliveryStatus.BOUNCED, DeliveryStatus.COMPLAINED})
# Taken by the provider, whatever it reported later: what latency and "sent" counts measure.
ACCEPTED_STATUSES = SUCCESS_STATUSES | {DeliveryStatus.BOUNCED, DeliveryStatus.COMPLAINED}
# Ended on purpose without a send (no address for the channel, a discarded sandbox message): a run moves on.
INTENDED_SKIP_STATUSES = frozenset({DeliveryStatus.SKIPPED, DeliveryStatus.DISCARDED})


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


class Delivery(models.Model):
    """One message to one recipient over one channel; retried until it succeeds or gives up.

    `message_id` is the Standard Webhooks `webhook-id`: stable across retries and replays.
    """

    # Every index is paid for on each change of status: keys that are often empty have partial indexes,
    # none repeats the prefix of another, and message_id's uniqueness is a constraint (unique=True would
    # add a second, pattern-matching index that nothing uses).
    message_id = models.CharField(max_length=40, default=new_message_id, editable=False)
    product = models.ForeignKey("tenants.Product", on_delete=models.PROTECT, related_name="+", db_index=False)
    organization = models.ForeignKey(
        "tenants.Organization", null=True, blank=True, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    request = models.ForeignKey(
        "runs.TriggerRequest",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="deliveries",
        db_index=False,
    )
    run = models.ForeignKey(
        "runs.Run", null=True, blank=True, on_delete=models.CASCADE, related_name="deliveries", db_index=False
    )
    step_id = models.CharField(max_length=64, blank=True)
    # Row-event deliveries: the captured event, and which chunk of its ids this message carries.
    event = models.ForeignKey(
        "connections.Event", null=True, blank=True, on_delete=models.CASCADE, related_name="deliveries", db_index=False
    )
    chunk = models.PositiveIntegerField(default=0)
    channel = models.CharField(max_length=20)
    endpoint = models.ForeignKey(
        WebhookEndpoint, null=True, blank=True, on_delete=models.PROTECT, related_name="deliveries"
    )
    recipient_id = models.CharField(max_length=200, blank=True)
    target = models.CharField(max_length=2000, help_text="URL, address or number the message goes to.")
    # The provider's own id for the message (e.g. an email provider's), which its event webhooks quote.
    provider_message_id = models.CharField(max_length=200, blank=True, default="", db_default="")
    payload = models.JSONField(
        help_text="The rendered message, exactly as it is sent.", encoder=ExactEncoder, decoder=ExactDecoder
    )
    priority = models.CharField(max_length=10, default="normal")
    status = models.CharField(max_length=20, choices=DeliveryStatus.choices, default=DeliveryStatus.QUEUED)
    attempt_count = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField()
    # Seconds before each retry (apps.deliveries.backoff); null: exponential, by the two fields below.
    retry_schedule = models.JSONField(null=True, blank=True)
    # The workflow's exponential back-off (first step and cap, in seconds); null: the settings' defaults.
    backoff_seconds = models.FloatField(null=True, blank=True)
    max_backoff_seconds = models.FloatField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # When the last Celery hint was sent: lets the dispatcher re-send hints that were lost.
    enqueued_at = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "deliveries"
        permissions = [("review_delivery", "Can release and discard held deliveries")]
        constraints = [
            models.UniqueConstraint(fields=["message_id"], name="delivery_message_id_unique"),
            # A notify step executed twice for the same run cannot create a second delivery.
            models.UniqueConstraint(
                fields=["run", "step_id"], name="delivery_once_per_run_step", condition=models.Q(run__isnull=False)
            ),
            # Reading an event twice cannot notify an endpoint twice.
            models.UniqueConstraint(
                fields=["event", "endpoint", "chunk"],
                name="delivery_once_per_event_chunk",
                condition=models.Q(event__isnull=False),
            ),
        ]
        indexes = [
            models.Index(fields=["next_attempt_at"], name="delivery_due", condition=models.Q(status="queued")),
            models.Index(fields=["lease_until"], name="delivery_sending_lease", condition=models.Q(status="sending")),
            models.Index(fields=["product", "-created_at"], name="delivery_product_recent"),
            models.Index(fields=["product", "id"], name="delivery_held", condition=models.Q(status="held")),
            models.Index(fields=["request"], name="delivery_request", condition=models.Q(request__isnull=False)),
            # What retention asks before it deletes a recorded event: does a delivery still refer to it?
            models.Index(fields=["event"], name="delivery_event", condition=models.Q(event__isnull=False)),
            models.Index(
                fields=["provider_message_id"],
                name="delivery_provider_message",
                condition=~models.Q(provider_message_id=""),
            ),
            models.Index(
                fields=["organization"], name="delivery_organization", condition=models.Q(organization__isnull=False)
            ),
        ]

    def __str__(self):
        return f"{self.channel} {self.message_id} ({self.status})"


class AttemptOutcome(models.TextChoices):
    SUCCESS = "success"
    FAILURE = "failure"
    UNKNOWN = "unknown"


class DeliveryAttempt(models.Model):
    """One try at sending a delivery: what was answered, how long it took, what went wrong."""

    delivery = models.ForeignKey(
        Delivery, on_delete=models.CASCADE, related_name="attempts", db_index=False
    )  # attempt_number_unique
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(default=0)
    outcome = models.CharField(max_length=10, choices=AttemptOutcome.choices)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    response_excerpt = models.TextField(blank=True)
    permanent = models.BooleanField(default=False, help_text="The failure cannot succeed on retry.")

    class Meta:
        ordering = ["delivery_id", "number"]
        constraints = [models.UniqueConstraint(fields=["delivery", "number"], name="attempt_number_unique")]


class EventSource(models.TextChoices):
    ROWBELL = "rowbell"  # the delivery engine
    OPERATOR = "operator"  # a person: review, replay, cancel
    PROVIDER = "provider"  # the provider's own report (e.g. an email provider's event webhook)
    TRACKING = "tracking"  # Rowbell's open pixel and click redirect


class DeliveryEvent(models.Model):
    """One change of a delivery's status: what it became, when, and who said so. A delivery's first
    event is the status it was created with."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="events", db_index=False)
    status = models.CharField(max_length=20, choices=DeliveryStatus.choices)
    at = models.DateTimeField()
    source = models.CharField(max_length=20, choices=EventSource.choices, default=EventSource.ROWBELL)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["delivery_id", "id"]
        indexes = [models.Index(fields=["delivery", "id"], name="delivery_event_history")]

    def __str__(self):
        return f"{self.delivery_id} {self.status} ({self.source})"


class ProviderConfig(models.Model):
    """How a product (or one of its organizations) sends on a channel: the provider, its credentials
    (encrypted at rest, never shown again) and its non-secret options. An organization's configuration
    takes precedence over its product's; without either, the settings' default applies where there is one."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    product = models.ForeignKey("tenants.Product", on_delete=models.PROTECT, related_name="+")
    organization = models.ForeignKey(
        "tenants.Organization", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    channel = models.CharField(max_length=20)
    provider = models.CharField(max_length=40)
    credentials = EncryptedTextField(help_text="JSON, encrypted at rest.")
    options = models.JSONField(default=dict, blank=True)
    # Email providers report deliveries, bounces, opens... to their own event webhook URL, whose path
    # carries this unguessable token and whose basic-auth password is `events_secret`: a call is
    # accepted only with both, and it can only touch this configuration's deliveries.
    events_token = models.CharField(max_length=64, blank=True, default="")
    events_secret = EncryptedTextField(blank=True, default="", help_text="Basic-auth password, encrypted at rest.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["product_id", "channel"]
        constraints = [
            models.UniqueConstraint(
                fields=["product", "channel"],
                name="provider_per_product_channel",
                condition=models.Q(organization__isnull=True),
            ),
            models.UniqueConstraint(
                fields=["organization", "channel"],
                name="provider_per_organization_channel",
                condition=models.Q(organization__isnull=False),
            ),
            models.UniqueConstraint(
                fields=["events_token"], name="provider_events_token_unique", condition=~models.Q(events_token="")
            ),
        ]

    def __str__(self):
        return f"{self.channel}: {self.provider}"
