from django.db import models

from apps.core.exactjson import ExactDecoder, ExactEncoder


class AuditEvent(models.Model):
    """One append-only row per state change; scoped to the tenant it concerns.

    The table refuses UPDATE at the database level (see the migration); rows are only ever added.
    """

    created_at = models.DateTimeField(auto_now_add=True)
    # No foreign-key constraint or single-column index: this is the hottest insert in Rowbell, rows are
    # written only by services that hold the tenant, and the composite indexes below serve every read.
    product = models.ForeignKey(
        "tenants.Product",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    organization = models.ForeignKey(
        "tenants.Organization",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    # Who did it: "key:<prefix>", "staff:<username>", "platform" or "system".
    actor = models.CharField(max_length=120)
    action = models.CharField(max_length=80)
    target_type = models.CharField(max_length=40)
    target_id = models.CharField(max_length=200)  # a workflow key (100), an id, a key prefix...
    # Exact numbers: a backfill's `after` may be a numeric(30,20) key (apps.core.exactjson).
    data = models.JSONField(default=dict, blank=True, encoder=ExactEncoder, decoder=ExactDecoder)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["product", "-id"], name="audit_product_recent"),
            models.Index(
                fields=["organization", "-id"], name="audit_org_recent", condition=models.Q(organization__isnull=False)
            ),
            models.Index(fields=["target_type", "target_id"], name="audit_target"),
        ]

    def __str__(self):
        return f"{self.action} {self.target_type}:{self.target_id}"
