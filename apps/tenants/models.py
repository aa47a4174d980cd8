import uuid

from django.db import models
from rest_framework_api_key.models import AbstractAPIKey

from apps.core.encryption import EncryptedTextField
from apps.core.permissions import KeyScope

__all__ = ["ApiKey", "KeyScope", "Organization", "Product"]


class Product(models.Model):
    """A customer of Rowbell. B2C products use no organizations; B2B products have many."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    # Every workflow of a sandboxed product holds its deliveries for review.
    sandbox = models.BooleanField(default=False)
    # Where operators are told about failed runs, beside Django's ADMINS (signed like every webhook).
    escalation_webhook = models.ForeignKey(
        "deliveries.WebhookEndpoint", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Days its finished runs, deliveries, requests and recorded events are kept (null: ROWBELL_RETENTION_DAYS).
    retention_days = models.PositiveIntegerField(null=True, blank=True)
    # The workflow builder's model for this product (blank: the ROWBELL_AI_* settings); set by the platform.
    ai_base_url = models.CharField(max_length=500, blank=True, default="")
    ai_model = models.CharField(max_length=200, blank=True, default="")
    ai_api_key = EncryptedTextField(blank=True, default="", help_text="Encrypted at rest, never shown again.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Organization(models.Model):
    """A B2B product's own customer: its data is isolated from its siblings'."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="organizations")
    name = models.CharField(max_length=200)
    # The id the product's own database gives this organization (e.g. the value of `orders.org_id`), as
    # text, so that a row can be routed to the organization that owns it. NULL when unset (never ''),
    # so that any number of organizations may have none.
    external_id = models.CharField(max_length=200, null=True, blank=True)
    # Every delivery of the organization's runs is held for review, as for a sandboxed product.
    sandbox = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            # Also the index that organizations_by_external_id reads.
            models.UniqueConstraint(
                fields=["product", "external_id"],
                condition=models.Q(external_id__isnull=False),
                name="organization_external_id_unique_per_product",
            ),
            models.CheckConstraint(name="organization_external_id_not_empty", condition=~models.Q(external_id="")),
        ]

    def __str__(self):
        return f"{self.product.name} / {self.name}"


class ApiKey(AbstractAPIKey):
    """A hashed API key (SHA-512: keys are random and long), shown once at creation.

    `scope` says what the key may act as; the product/organization columns say which.
    """

    scope = models.CharField(max_length=20, choices=KeyScope.choices)
    product = models.ForeignKey(Product, null=True, blank=True, on_delete=models.PROTECT, related_name="api_keys")
    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.PROTECT, related_name="api_keys"
    )

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        constraints = [
            models.CheckConstraint(
                name="api_key_scope_matches_owner",
                condition=(
                    models.Q(scope="platform", product__isnull=True, organization__isnull=True)
                    | models.Q(scope="product", product__isnull=False, organization__isnull=True)
                    | models.Q(scope="organization", product__isnull=False, organization__isnull=False)
                ),
            )
        ]
