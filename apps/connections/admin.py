from django.contrib import admin, messages
from django.utils.html import format_html, format_html_join

from apps.core.admin_lists import OperatorAdmin, actor_of, back_to, clipped, fixed_filter
from apps.core.templatetags.humanize_rowbell import seconds

from .models import Connection, Event
from .services import connection_check_request, connection_delete_request, connection_repair_request
from .sources import EVENT_OF_OPERATION


class DriftFilter(admin.SimpleListFilter):
    """Connections whose triggers no longer capture what is published (the drift the health tick records):
    the dashboard's list of them links here."""

    title = "trigger drift"
    parameter_name = "drift"

    def lookups(self, request, model_admin):
        return [("yes", "Drifted"), ("no", "In order")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.exclude(capture_problems=[])
        if self.value() == "no":
            return queryset.filter(capture_problems=[])
        return queryset


@admin.register(Connection)
class ConnectionAdmin(OperatorAdmin):
    list_display = (
        "name",
        "product",
        "server",
        "backlog",
        "lag",
        "last_poll_at",
        "trigger_status",
        "last_error_shown",
    )
    list_filter = ("product", DriftFilter)
    list_select_related = ("product",)
    search_fields = ("name", "host", "database")
    # The password never appears in the admin.
    exclude = ("password", "check_report", "capture_problems", "capture_problems_since", "capture_errors")
    readonly_fields = (
        "id",
        "product",
        "created_at",
        "updated_at",
        "capture_installed_at",
        "consumed_snapshot",
        "batch_snapshot",
        "cursor_xid",
        "cursor_id",
        "last_poll_at",
        "last_error",
        "last_error_at",
        "backlog",
        "lag_seconds",
        "health_checked_at",
        "drift",
        "last_check",
    )
    actions = ["check_now", "repair_triggers", "delete_connection"]
    object_actions = (
        ("check_now", "Check now"),
        ("repair_triggers", "Repair triggers"),
        ("delete_connection", "Delete"),
    )

    def has_operate_permission(self, request):
        return request.user.has_perm("connections.operate_connection")

    @admin.display(description="database", ordering="host")
    def server(self, obj):
        return f"{obj.host}/{obj.database}"

    @admin.display(description="last error")
    def last_error_shown(self, obj):
        return clipped(obj.last_error)

    @admin.display(description="lag")
    def lag(self, obj):
        return seconds(obj.lag_seconds)

    @admin.display(description="drift")
    def drift(self, obj):
        problems = obj.capture_problems or []
        if not problems:
            return "None: every watched table matches its captures."
        items = format_html_join(
            "",
            "<li>{}: {} <small>{}</small></li>",
            (
                (
                    p["table"] or "install",
                    p["detail"],
                    ", ".join(
                        [f"workflow {w}" for w in p.get("workflows", [])]
                        + [f"endpoint {e}" for e in p.get("endpoints", [])]
                    ),
                )
                for p in problems
            ),
        )
        return format_html(
            "<p class='errornote'>Since {}: writes still succeed, but these changes may go "
            "unreported. Correct the source (or undo the migration), then “Repair triggers”.</p>"
            "<ul class='drift'>{}</ul>",
            obj.capture_problems_since,
            items,
        )

    @admin.display(description="triggers")
    def trigger_status(self, obj):
        broken = [p for p in obj.capture_problems or [] if not p.get("repairable")]
        if broken:
            return f"broken: {len(broken)} problem(s), see drift"
        captures = (obj.check_report or {}).get("captures")
        if not captures:
            return "not checked yet"
        if "error" in captures:
            return "could not be read"
        missing, unused = captures.get("missing", []), captures.get("unused", [])
        if not missing and not unused:
            return f"in order ({len(captures.get('installed', []))} installed)"
        return f"drift: {len(missing)} missing, {len(unused)} unused"

    @admin.display(description="last check")
    def last_check(self, obj):
        report = obj.check_report or {}
        if not report:
            return "Not checked yet: use “Check now”."
        checks = format_html_join(
            "",
            "<li>{} {}: {}</li>",
            (("✔" if c["ok"] else "✘", c["name"], c["detail"]) for c in report.get("checks", [])),
        )
        captures = report.get("captures", {})
        drift = (
            format_html("<p>Triggers could not be read: {}</p>", captures["error"])
            if "error" in captures
            else format_html(
                "<p>Triggers: {} wanted, {} installed; missing: {}; unused: {}.</p>",
                len(captures.get("wanted", [])),
                len(captures.get("installed", [])),
                ", ".join(captures.get("missing", [])) or "none",
                ", ".join(captures.get("unused", [])) or "none",
            )
        )
        return format_html("<ul class='checks'>{}</ul>{}<p>Status: {}</p>", checks, drift, self.trigger_status(obj))

    def _queue_each(self, request, queryset, service, doing: str):
        names = []
        for connection in queryset:
            service(connection=connection, actor=actor_of(request))
            names.append(connection.name)
        self.message_user(
            request,
            f"{doing} {', '.join(names)} in the background; the page shows the result "
            "within moments, and Queued actions how it went.",
            messages.SUCCESS,
        )
        return back_to(request)

    @admin.action(description="Check now (connection, backlog, trigger drift)", permissions=["operate"])
    def check_now(self, request, queryset):
        return self._queue_each(request, queryset, connection_check_request, "Checking")

    @admin.action(description="Repair triggers (install what is missing)", permissions=["operate"])
    def repair_triggers(self, request, queryset):
        return self._queue_each(request, queryset, connection_repair_request, "Repairing the triggers of")

    @admin.action(
        description="Delete (retire its triggers; refused while a workflow or endpoint uses it)",
        permissions=["operate"],
    )
    def delete_connection(self, request, queryset):
        return self._queue_each(request, queryset, connection_delete_request, "Deleting")


@admin.register(Event)
class EventAdmin(OperatorAdmin):
    list_display = ("id", "connection", "table_name", "op", "captured_at", "recorded_at")
    list_filter = (fixed_filter("operation", "op", EVENT_OF_OPERATION),)
    list_select_related = ("connection",)
    readonly_fields = [f.name for f in Event._meta.fields]
