from django.contrib import admin

from .models import Workflow, WorkflowVersion


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
class WorkflowAdmin(admin.ModelAdmin):
    list_display = ("key", "name", "product", "published_version", "updated_at")
    list_filter = ("product",)
    search_fields = ("key", "name")
    list_select_related = ("product", "published_version")
    readonly_fields = ("product", "key", "draft", "published_version", "created_at", "updated_at")
    inlines = [WorkflowVersionInline]

    def has_add_permission(self, request):
        return False  # created through the API, where the definition is validated


@admin.register(WorkflowVersion)
class WorkflowVersionAdmin(admin.ModelAdmin):
    list_display = ("workflow", "version", "published_at", "published_by")
    list_select_related = ("workflow",)
    readonly_fields = ("workflow", "version", "definition", "published_at", "published_by")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
