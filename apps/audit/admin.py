from django.contrib import admin

from apps.dashboard.lists import CreatedFilter, OperatorAdmin

from .models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(OperatorAdmin):
    """Read-only and searchable: a target id or an actor exactly (e.g. `staff:ann`), or an action by its
    beginning (e.g. `delivery.`), newest first. Exact matches keep a search of this ever-growing table
    to a walk down its primary key rather than a pattern match over every row's text."""

    list_display = ("id", "created_at", "action", "target_type", "target_id", "actor", "product", "organization")
    list_filter = ("target_type", "product", CreatedFilter)
    search_fields = ("=target_id", "=actor", "action__startswith")
    list_select_related = ("product", "organization__product")

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
