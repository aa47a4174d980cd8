from django.contrib import admin, messages
from django.utils import timezone

from apps.core.admin_lists import CreatedFilter, OperatorAdmin, actor_of, back_to, clipped, fixed_filter, masked_json
from apps.tenants.admin_filters import OrganizationFilter

from .engine import RunActionRefused, run_cancel, run_dismiss, run_rerun
from .models import Batch, BatchItem, Escalation, Run, RunStep, TriggerRequest

STEP_TYPES = ("notify", "wait", "branch", "batch")


def _each(modeladmin, request, runs, verb: str, action):
    """Apply a service to each selected run; report what was done and what was refused, and why."""
    done, refused = [], []
    for run in runs:
        try:
            result = action(run)
            done.append(f"{run.id}" + (f" (new run {result.id})" if result is not None and result.id != run.id else ""))
        except RunActionRefused as exc:
            refused.append(f"{run.id}: {exc.message}")
    if done:
        modeladmin.message_user(request, f"{verb}: {', '.join(done)}.", messages.SUCCESS)
    if refused:
        modeladmin.message_user(request, f"Not {verb.lower()}: {'; '.join(refused)}", messages.WARNING)
    return back_to(request)


class RunActions:
    """Re-run, cancel and dismiss, for runs (Run pages) and for failed runs' escalations."""

    def _runs(self, queryset):
        return queryset

    def has_operate_permission(self, request):
        return request.user.has_perm("runs.operate_run")

    @admin.action(description="Re-run from the failed step (as a new run)", permissions=["operate"])
    def rerun_from_failed_step(self, request, queryset):
        return _each(
            self,
            request,
            self._runs(queryset),
            "Re-run",
            lambda run: run_rerun(run=run, from_start=False, actor=actor_of(request)),
        )

    @admin.action(description="Re-run from the start (as a new run)", permissions=["operate"])
    def rerun_from_start(self, request, queryset):
        return _each(
            self,
            request,
            self._runs(queryset),
            "Re-run",
            lambda run: run_rerun(run=run, from_start=True, actor=actor_of(request)),
        )

    @admin.action(description="Cancel (queued or waiting runs)", permissions=["operate"])
    def cancel(self, request, queryset):
        return _each(
            self, request, self._runs(queryset), "Cancelled", lambda run: run_cancel(run=run, actor=actor_of(request))
        )

    @admin.action(description="Dismiss (failed, no re-run needed)", permissions=["operate"])
    def dismiss(self, request, queryset):
        return _each(
            self, request, self._runs(queryset), "Dismissed", lambda run: run_dismiss(run=run, actor=actor_of(request))
        )


@admin.register(TriggerRequest)
class TriggerRequestAdmin(OperatorAdmin):
    list_display = ("id", "tenant", "workflow_version", "priority", "status", "created_at")
    list_filter = ("status", "priority", CreatedFilter)
    search_fields = ("id",)
    exact_search_fields = ("id",)
    list_select_related = ("product", "organization__product", "workflow_version__workflow")
    # Recipients are shown with their chat webhooks masked, never as stored.
    exclude = ("recipients",)
    readonly_fields = [f.name if f.name != "recipients" else "recipients_shown" for f in TriggerRequest._meta.fields]

    @admin.display(description="recipients")
    def recipients_shown(self, obj):
        return masked_json(obj.recipients)


class WorkflowFilter(admin.SimpleListFilter):
    title = "workflow"
    parameter_name = "workflow"

    def lookups(self, request, model_admin):
        from apps.workflows.models import Workflow

        return [(w.id, f"{w.key} ({w.product.name})") for w in Workflow.objects.select_related("product")]

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        try:
            return queryset.filter(workflow_version__workflow_id=int(self.value()))
        except ValueError:
            return queryset.none()


@admin.register(Run)
class RunAdmin(RunActions, OperatorAdmin):
    list_display = (
        "id",
        "workflow_version",
        "status",
        "tenant",
        "waiting",
        "rerun_of",
        "created_at",
    )
    list_filter = ("status", WorkflowFilter, "product", OrganizationFilter, CreatedFilter, "waiting_on")
    search_fields = ("id",)
    exact_search_fields = ("id", "request")  # a run id, or a trigger request id
    list_select_related = ("product", "organization__product", "rerun_of", "workflow_version__workflow")
    exclude = ("recipient",)
    readonly_fields = [f.name if f.name != "recipient" else "recipient_shown" for f in Run._meta.fields]
    actions = ["rerun_from_failed_step", "rerun_from_start", "cancel", "dismiss"]
    object_actions = (
        ("rerun_from_failed_step", "Re-run from the failed step"),
        ("rerun_from_start", "Re-run from the start"),
        ("cancel", "Cancel"),
        ("dismiss", "Dismiss"),
    )
    change_form_template = "dashboard/run_change_form.html"

    @admin.display(description="recipient")
    def recipient_shown(self, obj):
        return masked_json(obj.recipient)

    @admin.display(description="waiting", ordering="resume_at")
    def waiting(self, obj):
        if not obj.waiting_on and obj.resume_at is None:
            return ""
        until = f" until {timezone.localtime(obj.resume_at):%Y-%m-%d %H:%M}" if obj.resume_at else ""
        return f"{obj.get_waiting_on_display() if obj.waiting_on else 'time'}{until}"

    def get_object(self, request, object_id, from_field=None):
        # A run's page shows what started it: read with the run (the list needs none of it).
        try:
            return (
                self.get_queryset(request)
                .select_related(
                    "request", "event", "product", "organization__product", "workflow_version__workflow", "rerun_of"
                )
                .get(pk=int(object_id))
            )
        except (Run.DoesNotExist, ValueError):
            return None

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        from .selectors import run_timeline

        # The timeline lists the run's steps too (no separate steps table).
        context["timeline"] = run_timeline(run=obj) if obj is not None else []
        return super().render_change_form(request, context, add, change, form_url, obj)


class DecidedFilter(admin.SimpleListFilter):
    title = "decided"
    parameter_name = "decided"

    def lookups(self, request, model_admin):
        return [("no", "Waiting for a decision"), ("yes", "Decided")]

    def queryset(self, request, queryset):
        if self.value() == "no":
            return queryset.filter(decided_at__isnull=True)
        if self.value() == "yes":
            return queryset.filter(decided_at__isnull=False)
        return queryset


@admin.register(Escalation)
class EscalationAdmin(RunActions, OperatorAdmin):
    """Failed runs: each waits here for a decision (re-run or dismiss)."""

    list_display = ("run", "product", "error_excerpt", "created_at", "notified_at", "decision", "decided_by")
    list_filter = (DecidedFilter, "product", "decision")
    list_select_related = ("run", "product")
    readonly_fields = [f.name for f in Escalation._meta.fields]
    actions = ["rerun_from_failed_step", "rerun_from_start", "dismiss"]
    object_actions = (
        ("rerun_from_failed_step", "Re-run from the failed step"),
        ("rerun_from_start", "Re-run from the start"),
        ("dismiss", "Dismiss"),
    )

    def _runs(self, queryset):
        return Run.objects.filter(id__in=queryset.values("run_id")).order_by("id")

    @admin.display(description="error")
    def error_excerpt(self, obj):
        return clipped(obj.error)


@admin.register(RunStep)
class RunStepAdmin(OperatorAdmin):
    list_display = ("run", "index", "step_id", "type", "status", "finished_at")
    list_filter = ("status", fixed_filter("type", "type", STEP_TYPES))
    list_select_related = ("run",)
    readonly_fields = [f.name for f in RunStep._meta.fields]


class BatchItemInline(admin.TabularInline):
    model = BatchItem
    fields = ("run", "item", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Batch)
class BatchAdmin(OperatorAdmin):
    list_display = ("id", "workflow_version", "step_id", "key", "size", "status", "closes_at", "owner")
    list_filter = ("status",)
    list_select_related = ("workflow_version__workflow", "owner")
    readonly_fields = [f.name for f in Batch._meta.fields]
    inlines = [BatchItemInline]
