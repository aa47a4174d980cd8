from django.db import models


class Workflow(models.Model):
    """A product's workflow: an editable draft definition plus the version triggers use."""

    product = models.ForeignKey("tenants.Product", on_delete=models.PROTECT, related_name="workflows")
    key = models.SlugField(max_length=100)
    name = models.CharField(max_length=200, blank=True)
    draft = models.JSONField(help_text="The definition being edited: {trigger, steps}.")
    published_version = models.ForeignKey(
        "WorkflowVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # Sandboxed: deliveries are rendered, then held for review instead of sent.
    sandbox = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]
        constraints = [models.UniqueConstraint(fields=["product", "key"], name="workflow_key_per_product")]
        permissions = [("publish_workflow", "Can publish and unpublish workflows")]

    def __str__(self):
        return self.key


class WorkflowVersion(models.Model):
    """An immutable, published definition. Runs keep the version they started with."""

    workflow = models.ForeignKey(Workflow, on_delete=models.PROTECT, related_name="versions")
    version = models.PositiveIntegerField()
    definition = models.JSONField()
    published_at = models.DateTimeField(auto_now_add=True)
    published_by = models.CharField(max_length=120)
    # A `database` trigger: the connection and the capture whose events start this version's runs, and
    # the capture's spec (to reinstall or keep it). Empty for `api` triggers.
    connection = models.ForeignKey(
        "connections.Connection", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    capture = models.CharField(max_length=63, blank=True, default="")
    capture_spec = models.JSONField(null=True, blank=True)
    # Where the rows an event names are read when a run starts: {"table": "public.orders", "key": ["id"]}.
    rows_from = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["workflow_id", "-version"]
        constraints = [models.UniqueConstraint(fields=["workflow", "version"], name="workflow_version_unique")]
        indexes = [
            models.Index(fields=["connection", "capture"], name="version_capture", condition=~models.Q(capture=""))
        ]

    def __str__(self):
        return f"{self.workflow.key} v{self.version}"
