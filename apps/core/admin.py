from django.contrib import admin

from apps.core.admin_lists import CreatedFilter, OperatorAdmin, clipped, fixed_filter

from .actions import ACTIONS
from .models import QueuedAction


class RequestedFilter(CreatedFilter):
    title = "requested"
    parameter_name = "requested"
    field = "requested_at"


@admin.register(QueuedAction)
class QueuedActionAdmin(OperatorAdmin):
    """What operators asked for that a worker does (it reaches a customer database), and how it went."""

    list_display = ("id", "name", "target", "actor", "status", "requested_at", "finished_at", "error_shown")
    list_filter = ("status", fixed_filter("action", "name", ACTIONS), RequestedFilter)
    search_fields = ("target_id",)
    exact_search_fields = ("target_id",)
    readonly_fields = [f.name for f in QueuedAction._meta.fields]

    @admin.display(description="target", ordering="target_id")
    def target(self, obj):
        return f"{obj.target_type} {obj.target_id}"

    @admin.display(description="error")
    def error_shown(self, obj):
        return clipped(obj.error)
