from django.contrib import admin
from django.db import models

from .models import Delivery, DeliveryAttempt, WebhookEndpoint


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ("url", "product", "enabled", "accept_any_2xx", "created_at")
    list_filter = ("enabled",)
    list_select_related = ("product",)
    search_fields = ("url", "id")
    # The signing secret never appears in the admin.
    exclude = ("secret",)
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    readonly_fields = ("id", "product", "created_at")

    def has_add_permission(self, request):
        return False  # created through the API, which shows the secret once


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    fields = ("number", "started_at", "duration_ms", "outcome", "status_code", "error", "response_excerpt")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ("message_id", "channel", "status", "target", "attempt_count", "product", "created_at")
    list_filter = ("status", "channel")
    search_fields = ("message_id", "recipient_id")
    list_select_related = ("product",)
    show_full_result_count = False
    readonly_fields = [f.name for f in Delivery._meta.fields]
    inlines = [DeliveryAttemptInline]

    def has_add_permission(self, request):
        return False


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(admin.ModelAdmin):
    list_display = ("delivery", "number", "outcome", "status_code", "duration_ms", "started_at")
    list_filter = ("outcome",)
    list_select_related = ("delivery",)
    show_full_result_count = False
    readonly_fields = [f.name for f in DeliveryAttempt._meta.fields]

    def has_add_permission(self, request):
        return False
