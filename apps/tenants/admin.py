from django import forms
from django.contrib import admin, messages
from rest_framework_api_key.admin import APIKeyModelAdmin

from apps.core.admin_lists import OperatorAdmin, actor_of
from apps.core.exceptions import InvalidInput

from .models import ApiKey, Organization, Product
from .selectors import organizations_by_external_id
from .services import api_key_revoke, external_id_clean, external_id_taken_reason, organization_update

# Products, organizations and keys are created and changed through the API (and `create_platform_key`),
# whose services audit every change and show keys once; here they are read, keys revoked, and an
# organization's name and external id changed (through the same service as the API).


@admin.register(Product)
class ProductAdmin(OperatorAdmin):
    list_display = ("name", "id", "sandbox", "created_at")
    search_fields = ("name",)
    readonly_fields = ("id", "created_at")
    raw_id_fields = ("escalation_webhook",)
    # The builder's key is set through the platform API and never shown again, here neither.
    exclude = ("ai_api_key",)


class OrganizationForm(forms.ModelForm):
    class Meta:
        model = Organization
        fields = ("name", "external_id", "sandbox")

    def clean_external_id(self):
        """The external id as the service stores it, refused with the API's reasons (the product is not a
        field of this form, so Django's own check of the unique constraint skips it)."""
        try:
            external_id = external_id_clean(self.cleaned_data.get("external_id"))
        except InvalidInput as exc:
            raise forms.ValidationError(exc.message) from None
        if external_id:
            found = organizations_by_external_id(product_id=self.instance.product_id, external_ids=[external_id])
            holder = found.get(external_id)
            if holder is not None and holder.pk != self.instance.pk:
                raise forms.ValidationError(external_id_taken_reason(holder=holder))
        return external_id


@admin.register(Organization)
class OrganizationAdmin(OperatorAdmin):
    list_display = ("name", "product", "external_id", "sandbox", "id", "created_at")
    list_filter = ("product",)
    search_fields = ("name", "external_id")
    list_select_related = ("product",)
    form = OrganizationForm
    fields = ("name", "external_id", "sandbox", "product", "id", "created_at")
    readonly_fields = ("product", "id", "created_at")

    def has_change_permission(self, request, obj=None):
        return request.user.has_perm("tenants.change_organization")

    def save_model(self, request, obj, form, change):
        # The form has already set the new values on `obj`: the service compares them with the row's.
        current = Organization.objects.get(pk=obj.pk)
        organization_update(
            organization=current,
            name=form.cleaned_data["name"],
            external_id=form.cleaned_data["external_id"],
            sandbox=form.cleaned_data["sandbox"],
            actor=actor_of(request),
        )


@admin.register(ApiKey)
class ApiKeyAdmin(OperatorAdmin, APIKeyModelAdmin):
    # APIKeyModelAdmin's package is typed: these take the types of its own values, tuples of their lengths
    # (mypy reads no wider type there); Django takes a tuple of any length.
    list_display = ("prefix", "name", "scope", "tenant", "created", "expiry_date", "revoked")  # type: ignore[assignment]
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
