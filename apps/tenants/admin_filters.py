"""Admin list filters that know tenants."""

from __future__ import annotations

from django.contrib import admin

from apps.core.ids import uuid_or_none

from .models import Organization


class OrganizationFilter(admin.SimpleListFilter):
    """Organizations named with their product, read in one query."""

    title = "organization"
    parameter_name = "organization"

    def lookups(self, request, model_admin):
        return [(str(o.id), f"{o.product.name} / {o.name}") for o in Organization.objects.select_related("product")]

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        wanted = uuid_or_none(self.value())
        return queryset.filter(organization_id=wanted) if wanted else queryset.none()
