from django.contrib import admin, messages
from rest_framework_api_key.admin import APIKeyModelAdmin

from .models import ApiKey, Organization, Product
from .services import api_key_revoke


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ("name", "id", "created_at")
    search_fields = ("name", "id")
    readonly_fields = ("id", "created_at")


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ("name", "product", "id", "created_at")
    list_filter = ("product",)
    search_fields = ("name", "id")
    list_select_related = ("product",)
    readonly_fields = ("id", "created_at")


@admin.register(ApiKey)
class ApiKeyAdmin(APIKeyModelAdmin):
    list_display = ("prefix", "name", "scope", "product", "organization", "created", "expiry_date", "revoked")
    list_filter = ("scope", "revoked")
    search_fields = ("prefix", "name")
    list_select_related = ("product", "organization")
    actions = ["revoke_keys"]

    def has_add_permission(self, request):
        # Keys are issued by the API and `create_platform_key`, where the raw key can be shown once.
        return False

    @admin.action(description="Revoke selected keys")
    def revoke_keys(self, request, queryset):
        for key in queryset.filter(revoked=False):
            api_key_revoke(key=key, actor=f"staff:{request.user.get_username()}")
        messages.success(request, "Selected keys revoked.")
