from django.contrib import admin, messages
from rest_framework_api_key.admin import APIKeyModelAdmin

from apps.core.admin_lists import OperatorAdmin, actor_of

from .models import ApiKey, Organization, Product
from .services import api_key_revoke

# Products, organizations and keys are created and changed through the API (and `create_platform_key`),
# whose services audit every change and show keys once; here they are read (and keys revoked).


@admin.register(Product)
class ProductAdmin(OperatorAdmin):
    list_display = ("name", "id", "sandbox", "created_at")
    search_fields = ("name",)
    readonly_fields = ("id", "created_at")
    raw_id_fields = ("escalation_webhook",)


@admin.register(Organization)
class OrganizationAdmin(OperatorAdmin):
    list_display = ("name", "product", "id", "created_at")
    list_filter = ("product",)
    search_fields = ("name",)
    list_select_related = ("product",)
    readonly_fields = ("id", "created_at")
    raw_id_fields = ("product",)


@admin.register(ApiKey)
class ApiKeyAdmin(OperatorAdmin, APIKeyModelAdmin):
    # APIKeyModelAdmin's package is typed: these take the types of its own values, tuples of their lengths
    # (mypy reads no wider type there); Django takes a tuple of any length.
    list_display = ("prefix", "name", "scope", "product", "organization", "created", "expiry_date", "revoked")  # type: ignore[assignment]
    list_filter = ("scope", "revoked")  # type: ignore[assignment]
    search_fields = ("prefix", "name")
    list_select_related = ("product", "organization__product")
    raw_id_fields = ("product", "organization")
    actions = ["revoke_keys"]

    def has_revoke_permission(self, request):
        return request.user.has_perm("tenants.change_apikey")

    @admin.action(description="Revoke selected keys", permissions=["revoke"])
    def revoke_keys(self, request, queryset):
        revoked = 0
        for key in queryset.filter(revoked=False):
            api_key_revoke(key=key, actor=actor_of(request))
            revoked += 1
        messages.success(request, f"Revoked {revoked} key(s).")
