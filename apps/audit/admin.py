from django.contrib import admin

from apps.core.admin_lists import CreatedFilter, OperatorAdmin, fixed_filter

from .models import AuditEvent

# What audit rows are about. Searching names them all, so that a search by target id can use the
# (target_type, target_id) index.
TARGET_TYPES = (
    "api_key",
    "connection",
    "delivery",
    "organization",
    "product",
    "provider",
    "request",
    "run",
    "webhook",
    "workflow",
)


class ActionFilter(admin.SimpleListFilter):
    title = "action"
    parameter_name = "action_family"

    def lookups(self, request, model_admin):
        return [(t, f"{t}.*") for t in TARGET_TYPES] + [("escalation", "escalation.*")]

    def queryset(self, request, queryset):
        if self.value() in TARGET_TYPES or self.value() == "escalation":
            return queryset.filter(action__startswith=f"{self.value()}.")
        return queryset


@admin.register(AuditEvent)
class AuditEventAdmin(OperatorAdmin):
    """Read-only. Search finds what happened to one thing: its id (a run id, a message id, a request id,
    a workflow key...), exactly. Filters narrow by kind, action, product and age."""

    # The action names the kind of target (run.rerun, workflow.published): the type is a filter, not a column.
    list_display = ("id", "created_at", "action", "target_id", "actor", "tenant")
    list_filter = (fixed_filter("target type", "target_type", TARGET_TYPES), ActionFilter, "product", CreatedFilter)
    search_fields = ("target_id",)
    search_help_text = "The id of what an event is about: a run, a delivery (msg_...), a request, a workflow key..."
    list_select_related = ("product", "organization__product")

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(target_type__in=TARGET_TYPES, target_id=term), False
