import uuid

from django.db import models

from apps.core.encryption import EncryptedTextField


class SslMode(models.TextChoices):
    DISABLE = "disable"
    ALLOW = "allow"
    PREFER = "prefer"
    REQUIRE = "require"
    VERIFY_CA = "verify-ca"
    VERIFY_FULL = "verify-full"


class Connection(models.Model):
    """A customer's PostgreSQL database, reached with a dedicated minimal-permission user.

    The password is encrypted at rest and never leaves Rowbell: not in API answers, logs or the admin.
    """

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

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["product", "name"], name="connection_name_per_product")]

    def __str__(self):
        return f"{self.name} ({self.user}@{self.host}:{self.port}/{self.database})"
