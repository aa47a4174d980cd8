from collections import defaultdict

from django.contrib import admin, messages
from django.db import models

from .models import Delivery, DeliveryAttempt, DeliveryEvent, DeliveryStatus, ProviderConfig, WebhookEndpoint
from .services import deliveries_discard, deliveries_release


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ("url", "product", "enabled", "disabled_reason", "failing_since", "accept_any_2xx", "created_at")
    list_filter = ("enabled",)
    list_select_related = ("product",)
    search_fields = ("url", "id")
    # The signing secrets never appear in the admin.
    exclude = ("secret", "previous_secret")
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    # Enabling and disabling go through the services (audit, triggers, replay), not the form.
    readonly_fields = ("id", "product", "created_at", "enabled", "disabled_at", "disabled_reason", "failing_since",
                       "previous_secret_until")

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


class DeliveryEventInline(admin.TabularInline):
    model = DeliveryEvent
    fields = ("at", "status", "source", "detail")
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "status history"

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
    inlines = [DeliveryEventInline, DeliveryAttemptInline]
    actions = ["release", "discard"]

    def has_add_permission(self, request):
        return False

    def _review(self, request, queryset, service, verb: str):
        by_product = defaultdict(list)
        for product_id, message_id in queryset.filter(status=DeliveryStatus.HELD).values_list("product_id",
                                                                                               "message_id"):
            by_product[product_id].append(message_id)
        done = []
        for product_id, ids in by_product.items():
            done += service(product_id=product_id, message_ids=ids, actor=f"staff:{request.user.get_username()}")
        skipped = queryset.count() - len(done)
        self.message_user(request, f"{verb} {len(done)} held deliver{'y' if len(done) == 1 else 'ies'}"
                          + (f"; {skipped} not held, left alone." if skipped else "."),
                          messages.SUCCESS if done else messages.WARNING)

    @admin.action(description="Release (send) held deliveries")
    def release(self, request, queryset):
        self._review(request, queryset, deliveries_release, "Released")

    @admin.action(description="Discard held deliveries")
    def discard(self, request, queryset):
        self._review(request, queryset, deliveries_discard, "Discarded")


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(admin.ModelAdmin):
    list_display = ("delivery", "number", "outcome", "status_code", "duration_ms", "started_at")
    list_filter = ("outcome",)
    list_select_related = ("delivery",)
    show_full_result_count = False
    readonly_fields = [f.name for f in DeliveryAttempt._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(ProviderConfig)
class ProviderConfigAdmin(admin.ModelAdmin):
    """Which provider carries each channel. Set through the API, where credentials are checked; the
    admin shows the configuration, never the credentials."""

    list_display = ("channel", "provider", "product", "organization", "updated_at")
    list_filter = ("channel", "provider")
    list_select_related = ("product", "organization")
    exclude = ("credentials",)
    readonly_fields = ("id", "product", "organization", "channel", "provider", "options", "created_at", "updated_at")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
