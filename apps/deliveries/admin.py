from django import forms
from django.contrib import admin, messages

from apps.core.admin_lists import CreatedFilter, OperatorAdmin, actor_of, back_to, clipped, fixed_filter, masked_json
from apps.core.exceptions import ApplicationError, InvalidInput

from .channels import channel_kinds
from .models import (
    FAILURE_STATUSES,
    SUCCESS_STATUSES,
    Delivery,
    DeliveryAttempt,
    DeliveryEvent,
    DeliveryStatus,
    ProviderConfig,
    WebhookEndpoint,
)
from .services import (
    DEFAULT_SECRET_OVERLAP_SECONDS,
    deliveries_discard,
    deliveries_release,
    deliveries_replay,
    webhook_endpoint_disable,
    webhook_endpoint_enable_request,
    webhook_endpoint_rotate_secret,
)


class EndpointActions:
    def has_operate_permission(self, request):
        return request.user.has_perm("deliveries.operate_webhookendpoint")


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(EndpointActions, OperatorAdmin):
    list_display = (
        "url_masked",
        "product",
        "enabled",
        "disabled_reason_shown",
        "failing_since",
        "accept_any_2xx",
        "created_at",
    )
    list_filter = ("enabled", "product")
    list_select_related = ("product",)
    search_fields = ("host",)
    search_help_text = "The endpoint's host name (the rest of its URL is encrypted)."
    # The signing secrets never appear in the admin (a rotated one is shown once, to the operator who
    # rotated it, on the answer page, and is kept nowhere else in the admin); the URL only masked: it may
    # carry a token.
    exclude = ("secret", "previous_secret", "url")
    # Enabling and disabling go through the services (audit, triggers, replay), not the form.
    readonly_fields = (
        "id",
        "product",
        "url_masked",
        "host",
        "created_at",
        "enabled",
        "disabled_at",
        "disabled_reason",
        "failing_since",
        "previous_secret_until",
        "connection",
        "source",
        "capture",
        "capture_spec",
    )
    actions = ["disable", "enable", "enable_and_replay", "replay_failed", "rotate_secret"]
    object_actions = (
        ("disable", "Disable"),
        ("enable", "Enable"),
        ("enable_and_replay", "Enable and replay failed"),
        ("replay_failed", "Replay failed deliveries"),
        ("rotate_secret", "Rotate secret"),
    )
    # As the actions choose their endpoints: disable and replay an enabled one (a disabled endpoint's replay is
    # refused: enabling it offers the same), enable a disabled one.
    WHEN_ENABLED = ("disable", "replay_failed")
    WHEN_DISABLED = ("enable", "enable_and_replay")
    action_applies_to = {
        **{name: ("enabled__exact", ("1",)) for name in WHEN_ENABLED},
        **{name: ("enabled__exact", ("0",)) for name in WHEN_DISABLED},
    }

    def object_actions_for(self, obj):
        hidden = self.WHEN_DISABLED if obj.enabled else self.WHEN_ENABLED
        return [(name, label) for name, label in self.object_actions if name not in hidden]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("product", "connection")

    @admin.display(description="disabled reason")
    def disabled_reason_shown(self, obj):
        return clipped(obj.disabled_reason)

    @admin.action(description="Disable", permissions=["operate"])
    def disable(self, request, queryset):
        done = list(queryset.filter(enabled=True))
        for endpoint in done:
            webhook_endpoint_disable(endpoint=endpoint, actor=actor_of(request))
        self.message_user(
            request,
            f"Disabled {len(done)} endpoint(s)"
            + ("; row-event triggers no longer used are retired in the background." if done else "."),
            messages.SUCCESS if done else messages.WARNING,
        )
        return back_to(request)

    def _enable(self, request, queryset, replay: bool):
        chosen = list(queryset.filter(enabled=False))
        for endpoint in chosen:
            webhook_endpoint_enable_request(endpoint=endpoint, actor=actor_of(request), replay=replay)
        self.message_user(
            request,
            f"Enabling {len(chosen)} endpoint(s) in the background"
            + (", then replaying what failed meanwhile" if replay else "")
            + "; Queued actions shows the outcome."
            if chosen
            else "Nothing to enable: already enabled.",
            messages.SUCCESS if chosen else messages.WARNING,
        )
        return back_to(request)

    @admin.action(description="Enable", permissions=["operate"])
    def enable(self, request, queryset):
        return self._enable(request, queryset, replay=False)

    @admin.action(description="Enable and replay failed deliveries", permissions=["operate"])
    def enable_and_replay(self, request, queryset):
        return self._enable(request, queryset, replay=True)

    @admin.action(description="Replay failed deliveries", permissions=["operate"])
    def replay_failed(self, request, queryset):
        replayed, notes = 0, []
        for endpoint in queryset:
            try:
                result = deliveries_replay(product_id=endpoint.product_id, endpoint=endpoint, actor=actor_of(request))
            except ApplicationError as exc:
                notes.append(f"{endpoint.url_masked}: {exc.message}")
                continue
            replayed += len(result["replayed"])
            if result["not_replayed"]:
                notes.append(
                    f"{endpoint.url_masked}: {len(result['not_replayed'])} not replayed "
                    f"({next(iter(result['not_replayed'].values()))})"
                )
        self.message_user(
            request,
            f"Queued {replayed} failed deliver{'y' if replayed == 1 else 'ies'} again, with their original webhook-id.",
            messages.SUCCESS if replayed else messages.WARNING,
        )
        for note in notes:
            self.message_user(request, note, messages.WARNING)
        return back_to(request)

    @admin.action(
        description="Rotate the signing secret of one endpoint (the previous one signs for 24 hours)",
        permissions=["operate"],
    )
    def rotate_secret(self, request, queryset):
        from django.template.response import TemplateResponse

        if queryset.count() != 1:
            # A new secret must reach each endpoint's owner: one at a time, never a whole list by accident.
            self.message_user(request, "Rotate one endpoint's secret at a time. Nothing was rotated.", messages.ERROR)
            return back_to(request)
        rotated = [
            webhook_endpoint_rotate_secret(
                endpoint=queryset.get(), actor=actor_of(request), overlap_seconds=DEFAULT_SECRET_OVERLAP_SECONDS
            )
        ]
        # Shown once, in this answer only: not in a message (kept in the session) nor on any page.
        response = TemplateResponse(
            request,
            "dashboard/secret_rotated.html",
            {
                **self.admin_site.each_context(request),
                "title": "Signing secret rotated",
                "subtitle": None,
                "rotated": rotated,
                "overlap_hours": DEFAULT_SECRET_OVERLAP_SECONDS // 3600,
                "opts": self.opts,
            },
        )
        response["Cache-Control"] = "no-store"
        return response


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


class OutcomeFilter(admin.SimpleListFilter):
    """Deliveries that ended in failure (failed, bounced, complained) or success: the dashboard's rate."""

    title = "outcome"
    parameter_name = "outcome"

    def lookups(self, request, model_admin):
        return [("failure", "Failed, bounced or complained"), ("success", "Sent or better")]

    def queryset(self, request, queryset):
        if self.value() == "failure":
            return queryset.filter(status__in=FAILURE_STATUSES)
        if self.value() == "success":
            return queryset.filter(status__in=SUCCESS_STATUSES)
        return queryset


@admin.register(Delivery)
class DeliveryAdmin(OperatorAdmin):
    list_display = ("message_id", "channel", "status", "target", "attempt_count", "product", "created_at")
    list_filter = (
        "status",
        OutcomeFilter,
        fixed_filter("channel", "channel", channel_kinds()),
        "product",
        CreatedFilter,
    )
    search_fields = ("message_id",)  # shows the search box; see exact_search_fields
    exact_search_fields = ("message_id", "provider_message_id")
    list_select_related = ("product",)
    # A chat delivery's payload holds its recipient's webhook URL sealed: shown masked.
    exclude = ("payload",)
    readonly_fields = [f.name if f.name != "payload" else "payload_shown" for f in Delivery._meta.fields]
    inlines = [DeliveryEventInline, DeliveryAttemptInline]
    actions = ["release", "discard"]
    object_actions = (("release", "Release (send)"), ("discard", "Discard"))
    # Release and discard act on held deliveries only (deliveries_release, deliveries_discard).
    action_applies_to = {
        "release": ("status__exact", (DeliveryStatus.HELD,)),
        "discard": ("status__exact", (DeliveryStatus.HELD,)),
    }

    def object_actions_for(self, obj):
        return list(self.object_actions) if obj.status == DeliveryStatus.HELD else []

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("product", "organization__product", "request", "run", "event", "endpoint")
        )

    @admin.display(description="payload")
    def payload_shown(self, obj):
        return masked_json(obj.payload)

    def has_review_permission(self, request):
        return request.user.has_perm("deliveries.review_delivery")

    def _review(self, request, queryset, service, verb: str):
        from .services import MAX_REVIEW_BATCH

        chosen = list(queryset.order_by("id").values_list("message_id", flat=True)[: MAX_REVIEW_BATCH + 1])
        if len(chosen) > MAX_REVIEW_BATCH:
            self.message_user(
                request,
                f"At most {MAX_REVIEW_BATCH} deliveries at a time: narrow the selection "
                "(e.g. filter by product) and try again. Nothing was done.",
                messages.ERROR,
            )
            return back_to(request)
        done = service(product_id=None, message_ids=chosen, actor=actor_of(request))
        skipped = len(chosen) - len(done)
        self.message_user(
            request,
            f"{verb} {len(done)} held deliver{'y' if len(done) == 1 else 'ies'}"
            + (f"; {skipped} not held, left alone." if skipped else "."),
            messages.SUCCESS if done else messages.WARNING,
        )
        return back_to(request)

    @admin.action(description="Release (send) held deliveries", permissions=["review"])
    def release(self, request, queryset):
        return self._review(request, queryset, deliveries_release, "Released")

    @admin.action(description="Discard held deliveries", permissions=["review"])
    def discard(self, request, queryset):
        return self._review(request, queryset, deliveries_discard, "Discarded")


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(OperatorAdmin):
    list_display = ("delivery", "number", "outcome", "status_code", "duration_ms", "started_at")
    list_filter = ("outcome",)
    list_select_related = ("delivery",)
    readonly_fields = [f.name for f in DeliveryAttempt._meta.fields]


class ProviderConfigForm(forms.ModelForm):
    """The provider of a channel, checked as the API checks it. Credentials are write-only: the form never
    shows them, and leaving them empty when changing a configuration keeps the stored ones."""

    provider_choice = forms.ChoiceField(label="Channel and provider")
    credentials_json = forms.JSONField(
        label="Credentials",
        required=False,
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text='JSON, e.g. {"account_sid": "AC...", "auth_token": "..."}. '
        "Stored encrypted and never shown; empty keeps the stored ones.",
    )
    options_json = forms.JSONField(
        label="Options", required=False, initial=dict, widget=forms.Textarea(attrs={"rows": 4})
    )

    class Meta:
        model = ProviderConfig
        fields = ("product", "organization")

    def __init__(self, *args, **kwargs):
        from .channels.providers import PROVIDERS

        super().__init__(*args, **kwargs)
        self.fields["provider_choice"].choices = [
            (f"{c}:{p}", f"{c}: {PROVIDERS[(c, p)].title}") for c, p in sorted(PROVIDERS)
        ]
        if self.instance.pk:
            self.fields["provider_choice"].initial = f"{self.instance.channel}:{self.instance.provider}"
            self.fields["options_json"].initial = self.instance.options

    def clean(self):
        import json

        from .services import provider_config_check

        data = super().clean()
        if "provider_choice" not in data:
            return data
        channel, provider = data["provider_choice"].split(":", 1)
        credentials = data.get("credentials_json")
        if credentials in (None, "", {}) and self.instance.pk and self.instance.provider == provider:
            credentials = json.loads(self.instance.credentials)
        try:
            self.checked = provider_config_check(
                channel=channel, provider=provider, credentials=credentials, options=data.get("options_json") or {}
            )
        except InvalidInput as exc:
            for field, reason in (exc.fields or {"provider_choice": exc.message}).items():
                target = (
                    "credentials_json"
                    if field.startswith("credentials")
                    else "options_json"
                    if field.startswith("options")
                    else "provider_choice"
                )
                self.add_error(target, f"{field}: {reason}" if target != "provider_choice" else reason)
            return data
        organization = data.get("organization")
        if organization is not None and data.get("product") and organization.product_id != data["product"].id:
            self.add_error("organization", "This organization belongs to another product.")
        self.channel, self.provider = channel, provider
        return data


@admin.register(ProviderConfig)
class ProviderConfigAdmin(OperatorAdmin):
    """Which provider carries each channel, set here or through the API with the same checks. The
    credentials are never shown."""

    form = ProviderConfigForm
    list_display = ("channel", "provider", "tenant", "updated_at")
    list_filter = ("channel", "provider")
    list_select_related = ("product", "organization__product")
    fields = ("product", "organization", "provider_choice", "credentials_json", "options_json", "events_webhook")
    change_form_template = None
    actions = ["rotate_events_secret"]

    @admin.display(description="Event webhook")
    def events_webhook(self, obj):
        from .provider_events import USERNAME, provider_events_url

        url = provider_events_url(obj) if obj else ""
        if not url:
            return (
                "None for this provider."
                if obj and obj.pk
                else "Created on save, for SendGrid, Mailgun, Postmark and SES."
            )
        return (
            f"{url} — HTTP basic auth user {USERNAME}; the secret is shown once, by the action "
            "'Rotate the event webhook secret'."
        )

    @admin.action(description="Rotate the event webhook secret of one email provider", permissions=["change"])
    def rotate_events_secret(self, request, queryset):
        from django.template.response import TemplateResponse

        from .provider_events import provider_events_url
        from .services import provider_config_rotate_events_secret

        if queryset.count() != 1:
            self.message_user(
                request, "Rotate one configuration's secret at a time. Nothing was rotated.", messages.ERROR
            )
            return back_to(request)
        try:
            config = provider_config_rotate_events_secret(config=queryset.get(), actor=actor_of(request))
        except ApplicationError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return back_to(request)
        # Shown once, in this answer only (as rotated endpoint secrets are).
        response = TemplateResponse(
            request,
            "dashboard/provider_events_secret.html",
            {
                **self.admin_site.each_context(request),
                "title": "Event webhook secret rotated",
                "subtitle": None,
                "config": config,
                "url": provider_events_url(config),
                "url_with_secret": provider_events_url(config, secret=config.events_secret_new),
                "opts": self.opts,
            },
        )
        response["Cache-Control"] = "no-store"
        return response

    def has_add_permission(self, request):
        return request.user.has_perm("deliveries.add_providerconfig")

    def has_change_permission(self, request, obj=None):
        # Saved through provider_config_put (checks, encryption, audit): see save_model.
        return request.user.has_perm("deliveries.change_providerconfig")

    def get_readonly_fields(self, request, obj=None):
        return ("product", "organization", "events_webhook") if obj else ("events_webhook",)

    def save_model(self, request, obj, form, change):
        from .services import provider_config_put

        if change and (obj.channel != form.channel):
            from .services import provider_config_delete

            provider_config_delete(
                product=obj.product, channel=obj.channel, organization=obj.organization, actor=actor_of(request)
            )
        saved = provider_config_put(
            product=obj.product,
            organization=obj.organization,
            channel=form.channel,
            provider=form.provider,
            credentials=form.checked["credentials"],
            options=form.checked["options"],
            actor=actor_of(request),
        )
        obj.pk, obj.id = saved.pk, saved.id
