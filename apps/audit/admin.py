from django.contrib import admin

from .models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ("id", "created_at", "action", "target_type", "target_id", "actor", "product", "organization")
    list_filter = ("action", "target_type")
    search_fields = ("target_id", "actor", "action")
    list_select_related = ("product", "organization")
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
