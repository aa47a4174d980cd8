from django.contrib import admin

from .models import Run, RunStep, TriggerRequest


class RunStepInline(admin.TabularInline):
    model = RunStep
    fields = ("index", "step_id", "type", "status", "output", "error", "finished_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(TriggerRequest)
class TriggerRequestAdmin(admin.ModelAdmin):
    list_display = ("id", "product", "organization", "workflow_version", "priority", "status", "created_at")
    list_filter = ("status", "priority")
    search_fields = ("id", "idempotency_key")
    list_select_related = ("product", "organization", "workflow_version__workflow")
    show_full_result_count = False
    readonly_fields = [f.name for f in TriggerRequest._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ("id", "request", "workflow_version", "status", "step_index", "created_at")
    list_filter = ("status",)
    search_fields = ("id", "request__id")
    list_select_related = ("request", "workflow_version__workflow")
    show_full_result_count = False
    readonly_fields = [f.name for f in Run._meta.fields]
    inlines = [RunStepInline]

    def has_add_permission(self, request):
        return False


@admin.register(RunStep)
class RunStepAdmin(admin.ModelAdmin):
    list_display = ("run", "index", "step_id", "type", "status", "finished_at")
    list_filter = ("status", "type")
    list_select_related = ("run",)
    readonly_fields = [f.name for f in RunStep._meta.fields]

    def has_add_permission(self, request):
        return False
