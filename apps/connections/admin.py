from django.contrib import admin

from .models import Connection


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):
    list_display = ("name", "product", "host", "port", "database", "user", "schema", "created_at")
    list_filter = ("product",)
    list_select_related = ("product",)
    search_fields = ("name", "host", "database")
    # The password never appears in the admin.
    exclude = ("password",)
    readonly_fields = ("id", "product", "created_at", "updated_at")

    def has_add_permission(self, request):
        return False  # created through the API, which checks the database first
