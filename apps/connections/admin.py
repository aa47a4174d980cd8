from django.contrib import admin

from .models import Connection, Event


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):
    list_display = ("name", "product", "host", "database", "user", "capture_installed_at", "last_poll_at",
                    "last_error")
    list_filter = ("product",)
    list_select_related = ("product",)
    search_fields = ("name", "host", "database")
    # The password never appears in the admin.
    exclude = ("password",)
    readonly_fields = ("id", "product", "created_at", "updated_at", "capture_installed_at", "cursor_xid",
                       "cursor_id", "last_poll_at", "last_error", "last_error_at")

    def has_add_permission(self, request):
        return False  # created through the API, which checks the database first


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("id", "connection", "table_name", "op", "captured_at", "recorded_at")
    list_filter = ("op",)
    list_select_related = ("connection",)
    show_full_result_count = False
    readonly_fields = [f.name for f in Event._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
