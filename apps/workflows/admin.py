import difflib
import json

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import escape, format_html

from apps.core.admin_lists import OperatorAdmin, actor_of, back_to

from .models import Workflow, WorkflowVersion
from .services import workflow_backfill_request, workflow_publish_request, workflow_unpublish_request


class WorkflowVersionInline(admin.TabularInline):
    model = WorkflowVersion
    fields = ("version", "published_at", "published_by")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Workflow)
class WorkflowAdmin(OperatorAdmin):
    list_display = ("key", "name", "product", "published_version", "sandbox", "updated_at")
    list_filter = ("product", "sandbox")
    search_fields = ("key", "name")
    list_select_related = ("product", "published_version__workflow")
    readonly_fields = ("product", "key", "draft", "published_version", "created_at", "updated_at", "compare")
    inlines = [WorkflowVersionInline]
    actions = ["publish", "unpublish", "backfill"]
    object_actions = (("publish", "Publish the draft"), ("unpublish", "Unpublish"))

    def object_actions_for(self, obj):
        # Only a published workflow is unpublished (the action leaves the others alone).
        return [(n, label) for n, label in self.object_actions if n != "unpublish" or obj.published_version_id]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("product", "published_version__workflow")

    def has_publish_permission(self, request):
        return request.user.has_perm("workflows.publish_workflow")

    def get_urls(self):
        return [
            path(
                "<int:workflow_id>/compare/",
                self.admin_site.admin_view(self.compare_view),
                name="workflows_workflow_compare",
            ),
            *super().get_urls(),
        ]

    @admin.display(description="versions side by side")
    def compare(self, obj):
        url = reverse("admin:workflows_workflow_compare", args=[obj.pk])
        return format_html('<a href="{}">Compare versions and the draft</a>', url)

    @admin.action(description="Publish the draft (as a new version)", permissions=["publish"])
    def publish(self, request, queryset):
        keys = []
        for workflow in queryset:
            workflow_publish_request(workflow=workflow, actor=actor_of(request))
            keys.append(workflow.key)
        self.message_user(
            request,
            f"Publishing {', '.join(keys)} in the background (a database trigger is "
            "installed first where the workflow has one); Queued actions shows the outcome.",
            messages.SUCCESS,
        )
        return back_to(request)

    @admin.action(description="Unpublish (stop new runs)", permissions=["publish"])
    def unpublish(self, request, queryset):
        chosen = list(queryset.filter(published_version__isnull=False))
        for workflow in chosen:
            workflow_unpublish_request(workflow=workflow, actor=actor_of(request))
        keys = [w.key for w in chosen]
        self.message_user(
            request,
            f"Unpublishing {', '.join(keys)} in the background; runs already started finish."
            if keys
            else "Nothing to unpublish.",
            messages.SUCCESS if keys else messages.WARNING,
        )
        return back_to(request)

    @admin.action(description="Backfill: run for every existing row (low priority)", permissions=["publish"])
    def backfill(self, request, queryset):
        chosen = [
            w
            for w in queryset.select_related("published_version")
            if w.published_version is not None
            and w.published_version.definition["trigger"]["type"] == "database"
            and w.published_version.definition["trigger"].get("for_each", "statement") == "row"
        ]
        for workflow in chosen:
            workflow_backfill_request(workflow=workflow, actor=actor_of(request))
        self.message_user(
            request,
            f"Backfilling {', '.join(w.key for w in chosen)} in the background, at low priority: rows that already "
            "have a backfilled run start none; Queued actions shows the progress. For a predicate, use "
            "POST /api/v1/workflows/{key}/backfill."
            if chosen
            else "Nothing to backfill: only a published database trigger with for_each: row runs for existing rows.",
            messages.SUCCESS if chosen else messages.WARNING,
        )
        return back_to(request)

    def compare_view(self, request, workflow_id):
        """Two versions (or a version and the draft) side by side, with their differences marked."""
        workflow = Workflow.objects.select_related("product").filter(id=workflow_id).first()
        if workflow is None:
            raise Http404
        if not self.has_view_permission(request, workflow):
            raise PermissionDenied
        versions = list(
            WorkflowVersion.objects.filter(workflow=workflow)
            .order_by("-version")
            .values_list("version", "definition", "published_at", "published_by")
        )
        choices = {"draft": ("Draft", workflow.draft)}
        choices.update({str(v): (f"v{v} (published {at:%Y-%m-%d %H:%M} by {by})", d) for v, d, at, by in versions})
        newest = str(versions[0][0]) if versions else "draft"
        older = str(versions[1][0]) if len(versions) > 1 else newest
        left = request.GET.get("a") if request.GET.get("a") in choices else older
        right = request.GET.get("b") if request.GET.get("b") in choices else ("draft" if left == newest else newest)

        def lines(key):
            return json.dumps(choices[key][1], indent=2, sort_keys=True, ensure_ascii=False).splitlines()

        table = difflib.HtmlDiff(tabsize=2, wrapcolumn=70).make_table(
            lines(left), lines(right), escape(choices[left][0]), escape(choices[right][0]), context=False
        )
        context = {
            **self.admin_site.each_context(request),
            "title": f"{workflow.key}: versions side by side",
            "subtitle": None,
            "workflow": workflow,
            "opts": self.opts,
            "choices": choices,
            "a": left,
            "b": right,
            "diff": table,
            "same": lines(left) == lines(right),
        }
        return TemplateResponse(request, "dashboard/workflow_compare.html", context)


@admin.register(WorkflowVersion)
class WorkflowVersionAdmin(OperatorAdmin):
    list_display = ("workflow", "version", "published_at", "published_by")
    list_select_related = ("workflow",)
    readonly_fields = ("workflow", "version", "definition", "published_at", "published_by")
