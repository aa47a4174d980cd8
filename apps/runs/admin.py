from django.contrib import admin, messages
from django.utils import timezone

from apps.core.admin_lists import CreatedFilter, OperatorAdmin, actor_of, back_to, clipped, fixed_filter, masked_json
from apps.tenants.admin_filters import OrganizationFilter

from .engine import (
    CANCELLABLE,
    RERUNNABLE,
    RunActionRefused,
    run_actions_open,
    run_cancel,
    run_dismiss,
    run_latest_version,
    run_rerun,
)
from .models import Batch, BatchItem, Escalation, Run, RunStatus, RunStep, TriggerRequest
from .selectors import rerun_version_note

STEP_TYPES = ("notify", "wait", "branch", "batch")


def _each(modeladmin, request, runs, verb: str, action, done_as=None):
    """Apply a service to each selected run; report what was done (`done_as(run, result)`, else the run's id)
    and what was refused, and why."""
    done, refused = [], []
    for run in runs:
        try:
            result = action(run)
            done.append(done_as(run, result) if done_as else f"{run.id}")
        except RunActionRefused as exc:
            refused.append(f"{run.id}: {exc.message}")
    if done:
        modeladmin.message_user(request, f"{verb}: {', '.join(done)}.", messages.SUCCESS)
    if refused:
        modeladmin.message_user(request, f"Not {verb.lower()}: {'; '.join(refused)}", messages.WARNING)
    return back_to(request)


def rerun_described(run: Run, new: Run) -> str:
    """A re-run as the admin reports it: which run it is and which version it executes."""
    version = new.workflow_version.version
    if new.workflow_version_id == run.workflow_version_id:
        return f"{run.id} (new run {new.id}) on v{version} (the run's version)"
    return f"{run.id} (new run {new.id}) on v{version} (the latest published; run {run.id} ran v{run.workflow_version.version})"


# The re-run actions: (name, from the start, on which version).
RERUNS = (
    ("rerun_from_failed_step", False, "original"),
    ("rerun_from_start", True, "original"),
    ("rerun_from_failed_step_on_latest", False, "latest"),
    ("rerun_from_start_on_latest", True, "latest"),
)
RUN_BUTTONS = (
    "rerun_from_failed_step",
    "rerun_from_start",
    "rerun_from_failed_step_on_latest",
    "rerun_from_start_on_latest",
    "cancel",
    "dismiss",
)


class RunActions:
    """Re-run (on the run's version, or on the latest published one), cancel and dismiss, for runs (Run pages)
    and for failed runs' escalations. An object's page offers only the actions that apply to its run now, by
    the rules the services refuse by (apps.runs.engine.run_actions_open)."""

    def _runs(self, queryset):
        return queryset.select_related("workflow_version")

    def _run_of(self, obj) -> Run:
        return obj

    def has_operate_permission(self, request):
        return request.user.has_perm("runs.operate_run")

    def _rerun(self, request, queryset, *, from_start: bool, on: str):
        return _each(
            self,
            request,
            self._runs(queryset),
            "Re-run",
            lambda run: run_rerun(run=run, from_start=from_start, on=on, actor=actor_of(request)),
            done_as=rerun_described,
        )

    @admin.action(
        description="Re-run from the failed step, on the run's version (as a new run)", permissions=["operate"]
    )
    def rerun_from_failed_step(self, request, queryset):
        return self._rerun(request, queryset, from_start=False, on="original")

    @admin.action(description="Re-run from the start, on the run's version (as a new run)", permissions=["operate"])
    def rerun_from_start(self, request, queryset):
        return self._rerun(request, queryset, from_start=True, on="original")

    @admin.action(description="Re-run from the failed step, on the latest published version", permissions=["operate"])
    def rerun_from_failed_step_on_latest(self, request, queryset):
        return self._rerun(request, queryset, from_start=False, on="latest")

    @admin.action(description="Re-run from the start, on the latest published version", permissions=["operate"])
    def rerun_from_start_on_latest(self, request, queryset):
        return self._rerun(request, queryset, from_start=True, on="latest")

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

    def _open(self, run: Run) -> tuple[dict, object]:
        """run_actions_open and the newer published version of `run`, read once per page."""
        if "_rowbell_open" not in run.__dict__:
            latest = run_latest_version(run=run) if run.status in RERUNNABLE else None
            run.__dict__["_rowbell_open"] = (run_actions_open(run=run), latest)
        return run.__dict__["_rowbell_open"]

    def object_actions_for(self, obj):
        run = self._run_of(obj)
        applies, latest = self._open(run)
        ours = f"v{run.workflow_version.version} (the run's version)"
        newest = f"v{latest.version} (latest published)" if latest else ""
        labels = {
            "rerun_from_failed_step": f"Re-run from the failed step on {ours}",
            "rerun_from_start": f"Re-run from the start on {ours}",
            "rerun_from_failed_step_on_latest": f"Re-run from the failed step on {newest}",
            "rerun_from_start_on_latest": f"Re-run from the start on {newest}",
            "cancel": "Cancel",
            "dismiss": "Dismiss",
        }
        offered = {name for name, _ in self.object_actions}
        return [(n, labels[n]) for n in RUN_BUTTONS if n in offered and n in applies and applies[n] is None]

    def object_action_notes(self, obj):
        run = self._run_of(obj)
        if run.status not in RERUNNABLE:
            return []  # nothing to explain: a run that did not fail is not re-run
        applies, _ = self._open(run)
        return list(dict.fromkeys(why for name, _, _ in RERUNS if (why := applies.get(name))))


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
    # The page names which version a re-run executes, beside the run it re-runs.
    readonly_fields = [
        name
        for f in Run._meta.fields
        for name in (
            ("recipient_shown",)
            if f.name == "recipient"
            else (f.name, "rerun_on")
            if f.name == "rerun_of"
            else (f.name,)
        )
    ]
    actions = list(RUN_BUTTONS)
    # Labelled on each run's page with the versions they use (RunActions.object_actions_for).
    object_actions = tuple((name, name) for name in RUN_BUTTONS)
    action_applies_to = {
        **{name: ("status__exact", RERUNNABLE) for name, _, _ in RERUNS},
        "cancel": ("status__exact", CANCELLABLE),
        "dismiss": ("status__exact", (RunStatus.FAILED,)),
    }
    change_form_template = "dashboard/run_change_form.html"

    @admin.display(description="recipient")
    def recipient_shown(self, obj):
        return masked_json(obj.recipient)

    @admin.display(description="re-run on")
    def rerun_on(self, obj):
        return rerun_version_note(obj)

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
                    "request",
                    "event",
                    "product",
                    "organization__product",
                    "workflow_version__workflow",
                    "rerun_of__workflow_version",
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
    actions = [
        "rerun_from_failed_step",
        "rerun_from_start",
        "rerun_from_failed_step_on_latest",
        "rerun_from_start_on_latest",
        "dismiss",
    ]
    object_actions = tuple((name, name) for name in RUN_BUTTONS if name != "cancel")
    action_applies_to = {"dismiss": ("decided", ("no",))}

    def _runs(self, queryset):
        return Run.objects.filter(id__in=queryset.values("run_id")).select_related("workflow_version").order_by("id")

    def _run_of(self, obj) -> Run:
        return obj.run

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
