from django.db import models


class AuditEvent(models.Model):
    """One append-only row per state change; scoped to the tenant it concerns.

    The table refuses UPDATE at the database level (see the migration); rows are only ever added.
    """

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    product = models.ForeignKey("tenants.Product", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    organization = models.ForeignKey(
        "tenants.Organization", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # Who did it: "key:<prefix>", "staff:<username>", "platform" or "system".
    actor = models.CharField(max_length=120)
    action = models.CharField(max_length=80, db_index=True)
    target_type = models.CharField(max_length=40)
    target_id = models.CharField(max_length=64)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["product", "-id"], name="audit_product_recent"),
            models.Index(fields=["organization", "-id"], name="audit_org_recent"),
            models.Index(fields=["target_type", "target_id"], name="audit_target"),
        ]

    def __str__(self):
        return f"{self.action} {self.target_type}:{self.target_id}"
