from django.contrib import admin, messages

from .engine import RunActionRefused, run_cancel, run_rerun
from .models import Batch, BatchItem, Escalation, Run, RunStep, TriggerRequest


def _actor(request) -> str:
    return f"staff:{request.user.get_username()}"


def _each(modeladmin, request, queryset, verb: str, action) -> None:
    """Apply a service to each selected run; report what was done and what was refused, and why."""
    done, refused = [], []
    for run in queryset:
        try:
            result = action(run)
            done.append(f"{run.id}" + (f" (new run {result.id})" if result is not None and result.id != run.id else ""))
        except RunActionRefused as exc:
            refused.append(f"{run.id}: {exc.message}")
    if done:
        modeladmin.message_user(request, f"{verb}: {', '.join(done)}.", messages.SUCCESS)
    if refused:
        modeladmin.message_user(request, f"Not {verb.lower()}: {'; '.join(refused)}", messages.WARNING)


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
    list_display = ("id", "workflow_version", "status", "waiting_on", "resume_at", "request", "event", "rerun_of",
                    "created_at")
    list_filter = ("status", "waiting_on")
    search_fields = ("id", "request__id")
    list_select_related = ("request", "event", "rerun_of", "workflow_version__workflow")
    show_full_result_count = False
    readonly_fields = [f.name for f in Run._meta.fields]
    inlines = [RunStepInline]
    actions = ["rerun_from_failed_step", "rerun_from_start", "cancel"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Re-run from the failed step (as a new run)")
    def rerun_from_failed_step(self, request, queryset):
        _each(self, request, queryset, "Re-run", lambda run: run_rerun(run=run, from_start=False,
                                                                         actor=_actor(request)))

    @admin.action(description="Re-run from the start (as a new run)")
    def rerun_from_start(self, request, queryset):
        _each(self, request, queryset, "Re-run", lambda run: run_rerun(run=run, from_start=True, actor=_actor(request)))

    @admin.action(description="Cancel (queued or waiting runs)")
    def cancel(self, request, queryset):
        _each(self, request, queryset, "Cancelled", lambda run: run_cancel(run=run, actor=_actor(request)))


@admin.register(Escalation)
class EscalationAdmin(admin.ModelAdmin):
    list_display = ("run", "product", "created_at", "notified_at")
    list_select_related = ("run", "product")
    show_full_result_count = False
    readonly_fields = [f.name for f in Escalation._meta.fields]

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


class BatchItemInline(admin.TabularInline):
    model = BatchItem
    fields = ("run", "item", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    list_display = ("id", "workflow_version", "step_id", "key", "size", "status", "closes_at", "owner")
    list_filter = ("status",)
    list_select_related = ("workflow_version__workflow", "owner")
    show_full_result_count = False
    readonly_fields = [f.name for f in Batch._meta.fields]
    inlines = [BatchItemInline]

    def has_add_permission(self, request):
        return False
