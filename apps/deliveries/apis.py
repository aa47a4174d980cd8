from collections.abc import Callable

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core import fields as strict
from apps.core.exceptions import InvalidInput, NotFound
from apps.core.ids import uuid_or_none
from apps.core.known_fields import KnownFieldsOnly
from apps.core.masking import sealed_masked
from apps.core.pagination import NewestFirst, paginated
from apps.core.permissions import IsProduct, IsProductOrOrganization
from apps.tenants.models import Organization

from .models import DeliveryStatus
from .selectors import delivery_get, delivery_list, webhook_endpoint_get
from .services import (
    DEFAULT_SECRET_OVERLAP_SECONDS,
    MAX_REVIEW_BATCH,
    MAX_SECRET_OVERLAP_SECONDS,
    deliveries_discard,
    deliveries_release,
    deliveries_replay,
    provider_config_delete,
    provider_config_put,
    webhook_endpoint_disable,
    webhook_endpoint_enable,
    webhook_endpoint_rotate_secret,
    webhook_endpoint_update,
)


class WebhookOutputSerializer(serializers.Serializer):
    id = strict.UUIDField()
    url = strict.CharField(
        source="url_masked",
        help_text=("Masked (scheme://host/…last4): the full URL may carry a token, and is stored encrypted."),
    )
    description = strict.CharField()
    accept_any_2xx = strict.BooleanField()
    enabled = strict.BooleanField()
    disabled_at = serializers.DateTimeField(allow_null=True)
    disabled_reason = strict.CharField(help_text="Why it was disabled: by whom, or what Rowbell saw.")
    failing_since = serializers.DateTimeField(
        allow_null=True, help_text="Since when every attempt has failed (null: the last one succeeded)."
    )
    failed_attempts = strict.IntegerField(help_text="Attempts failed since the last success.")
    retry_schedule = strict.RetryScheduleField(
        help_text="Seconds before each retry of its webhooks; null: the service's webhook schedule."
    )
    previous_secret_until = serializers.DateTimeField(
        allow_null=True, help_text="After a rotation: until when messages are also signed with the previous secret."
    )
    source = serializers.JSONField(allow_null=True)
    created_at = serializers.DateTimeField()


class WebhookCreatedSerializer(WebhookOutputSerializer):
    secret = strict.CharField(help_text="whsec_... signing secret, shown once.")


class WebhookUpdateSerializer(KnownFieldsOnly, serializers.Serializer):
    description = strict.CharField(max_length=200, required=False, allow_blank=True)
    accept_any_2xx = strict.BooleanField(required=False, help_text="Count any 2xx as success (default: only 200).")
    retry_schedule = strict.RetryScheduleField(
        required=False,
        help_text='The wait before each retry of its webhooks, e.g. ["5s", "5m", "30m", "2h", "5h", "10h", "10h"] '
        "(or seconds); [] for one attempt only; null for the service's webhook schedule. A workflow's own `retry` "
        "comes first.",
    )


class WebhookDetailApi(APIView):
    permission_classes = [IsProduct]

    @extend_schema(responses=WebhookOutputSerializer)
    def get(self, request, endpoint_id):
        endpoint = webhook_endpoint_get(tenant=request.user, endpoint_id=endpoint_id)
        return Response(WebhookOutputSerializer(endpoint).data)

    @extend_schema(request=WebhookUpdateSerializer, responses=WebhookOutputSerializer)
    def patch(self, request, endpoint_id):
        endpoint = webhook_endpoint_get(tenant=request.user, endpoint_id=endpoint_id)
        data = WebhookUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint = webhook_endpoint_update(
            endpoint=endpoint, changes=dict(data.validated_data), actor=request.user.actor
        )
        return Response(WebhookOutputSerializer(endpoint).data)


class WebhookDisableApi(APIView):
    permission_classes = [IsProduct]

    @extend_schema(request=None, responses=WebhookOutputSerializer)
    def post(self, request, endpoint_id):
        endpoint = webhook_endpoint_get(tenant=request.user, endpoint_id=endpoint_id)
        return Response(
            WebhookOutputSerializer(webhook_endpoint_disable(endpoint=endpoint, actor=request.user.actor)).data
        )


class WebhookEnableApi(APIView):
    """Send to the endpoint again. What did not get through while it was failing or disabled is counted
    (`replay.replayable`), or sent again at once with `{"replay": true}`, with the original ids."""

    permission_classes = [IsProduct]

    class WebhookEnableInputSerializer(serializers.Serializer):
        replay = strict.BooleanField(
            required=False,
            default=False,
            help_text=("Also replay the deliveries that failed (or were skipped) while it was failing or disabled."),
        )

    class WebhookEnabledSerializer(WebhookOutputSerializer):
        replay = serializers.DictField(help_text="since, replayed, replayable (not replayed yet).")

    @extend_schema(request=WebhookEnableInputSerializer, responses=WebhookEnabledSerializer)
    def post(self, request, endpoint_id):
        data = self.WebhookEnableInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint = webhook_endpoint_get(tenant=request.user, endpoint_id=endpoint_id)
        endpoint, replay = webhook_endpoint_enable(
            endpoint=endpoint, actor=request.user.actor, replay=data.validated_data["replay"]
        )
        return Response(
            {
                **WebhookOutputSerializer(endpoint).data,
                "replay": {**replay, "since": replay["since"].isoformat() if replay["since"] else None},
            }
        )


class WebhookRotateSecretApi(APIView):
    """A new `whsec_` secret, shown once. Both the new and the previous secret sign every message until
    the overlap ends (`webhook-signature` carries both), so receivers switch without missing one."""

    permission_classes = [IsProduct]

    class RotateSecretInputSerializer(serializers.Serializer):
        overlap_seconds = strict.IntegerField(
            required=False, default=DEFAULT_SECRET_OVERLAP_SECONDS, min_value=0, max_value=MAX_SECRET_OVERLAP_SECONDS
        )

    class RotatedSecretSerializer(serializers.Serializer):
        id = strict.UUIDField()
        secret = strict.CharField(help_text="The new whsec_... secret, shown once.")
        previous_secret_until = serializers.DateTimeField()

    @extend_schema(request=RotateSecretInputSerializer, responses=RotatedSecretSerializer)
    def post(self, request, endpoint_id):
        data = self.RotateSecretInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint = webhook_endpoint_get(tenant=request.user, endpoint_id=endpoint_id)
        endpoint = webhook_endpoint_rotate_secret(
            endpoint=endpoint, actor=request.user.actor, overlap_seconds=data.validated_data["overlap_seconds"]
        )
        return Response(self.RotatedSecretSerializer(endpoint).data)


class ReplayOutputSerializer(serializers.Serializer):
    replayed = serializers.ListField(child=strict.CharField(), help_text="Delivery ids queued again.")
    not_replayed = serializers.DictField(child=strict.CharField(), help_text="Delivery id: why not.")


class WebhookReplayApi(APIView):
    """Send again every delivery of this endpoint that did not get through (failed, or skipped while it
    was disabled) and ended in [since, until), each with its original `webhook-id`."""

    permission_classes = [IsProduct]

    class WebhookReplayInputSerializer(serializers.Serializer):
        since = serializers.DateTimeField()
        until = serializers.DateTimeField(required=False, allow_null=True, default=None)

    @extend_schema(request=WebhookReplayInputSerializer, responses=ReplayOutputSerializer)
    def post(self, request, endpoint_id):
        data = self.WebhookReplayInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint = webhook_endpoint_get(tenant=request.user, endpoint_id=endpoint_id)
        return Response(
            deliveries_replay(
                product_id=request.user.product_id, actor=request.user.actor, endpoint=endpoint, **data.validated_data
            )
        )


class DeliveryOutputSerializer(serializers.Serializer):
    id = strict.CharField(source="message_id")
    run_id = strict.IntegerField(allow_null=True)
    step = strict.CharField(source="step_id")
    channel = strict.CharField()
    target = strict.CharField()
    recipient_id = strict.CharField()
    status = strict.CharField()
    payload = serializers.SerializerMethodField(
        help_text=(
            "The rendered message, exactly as it is (or would be) sent; a recipient's chat webhook URL is shown masked."
        )
    )
    attempts = strict.IntegerField(source="attempt_count")
    last_error = strict.CharField()
    created_at = serializers.DateTimeField()
    completed_at = serializers.DateTimeField(allow_null=True)

    @extend_schema_field(serializers.JSONField())
    def get_payload(self, delivery):
        return sealed_masked(delivery.payload)


class DeliveryEventSerializer(serializers.Serializer):
    status = strict.CharField()
    at = serializers.DateTimeField()
    source = strict.CharField(help_text="rowbell, operator, provider or tracking.")
    detail = serializers.JSONField()


class DeliveryAttemptSerializer(serializers.Serializer):
    number = strict.IntegerField()
    started_at = serializers.DateTimeField()
    duration_ms = strict.IntegerField(allow_null=True)
    outcome = strict.CharField()
    status_code = strict.IntegerField(allow_null=True)
    error = strict.CharField()


class DeliveryDetailSerializer(DeliveryOutputSerializer):
    events = DeliveryEventSerializer(many=True, help_text="Every change of status, oldest first.")
    attempt_log = DeliveryAttemptSerializer(many=True, source="attempts.all")


class DeliveryDetailApi(APIView):
    """One delivery: its rendered content, every change of status (when, and who said so) and every attempt."""

    permission_classes = [IsProductOrOrganization]

    @extend_schema(responses=DeliveryDetailSerializer)
    def get(self, request, message_id):
        return Response(DeliveryDetailSerializer(delivery_get(tenant=request.user, message_id=message_id)).data)


class DeliveryListApi(APIView):
    """Deliveries with their rendered content: `?status=held` is the sandbox review queue."""

    pagination_class = NewestFirst
    permission_classes = [IsProductOrOrganization]

    class FilterSerializer(strict.QuerySerializer):
        status = strict.ChoiceField(required=False, choices=DeliveryStatus.choices)
        workflow = strict.SlugField(required=False, max_length=100)
        run_id = strict.IntegerField(required=False, min_value=1)

    @extend_schema(parameters=[FilterSerializer], responses=DeliveryOutputSerializer(many=True))
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        return paginated(
            self, request, delivery_list(tenant=request.user, **filters.validated_data), DeliveryOutputSerializer
        )


class ReviewInputSerializer(serializers.Serializer):
    ids = serializers.ListField(
        child=strict.CharField(max_length=40),
        min_length=1,
        max_length=MAX_REVIEW_BATCH,
        help_text="Delivery ids (msg_...).",
    )


class ReviewOutputSerializer(serializers.Serializer):
    done = serializers.ListField(child=strict.CharField(), help_text="The deliveries this call changed.")
    skipped = serializers.ListField(
        child=strict.CharField(), help_text="Ids that were not held (already reviewed, or unknown)."
    )


class _ReviewApi(APIView):
    permission_classes = [IsProduct]
    review: Callable[..., list[str]] | None = None

    def post(self, request):
        data = ReviewInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        ids = list(dict.fromkeys(data.validated_data["ids"]))
        done = type(self).review(product_id=request.user.product_id, message_ids=ids, actor=request.user.actor)
        return Response({"done": done, "skipped": [i for i in ids if i not in set(done)]})


class DeliveryReleaseApi(_ReviewApi):
    """Send held deliveries as rendered, through the normal path (signing, retries)."""

    review = staticmethod(deliveries_release)

    @extend_schema(request=ReviewInputSerializer, responses=ReviewOutputSerializer)
    def post(self, request):
        return super().post(request)


class DeliveryReplayApi(APIView):
    """Send webhook deliveries again, as rendered and with their original `webhook-id`, whatever their
    final status (a delivered one is sent once more). Ones still in progress are reported, not touched."""

    permission_classes = [IsProduct]

    @extend_schema(request=ReviewInputSerializer, responses=ReplayOutputSerializer)
    def post(self, request):
        data = ReviewInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(
            deliveries_replay(
                product_id=request.user.product_id,
                actor=request.user.actor,
                message_ids=list(dict.fromkeys(data.validated_data["ids"])),
            )
        )


class DeliveryDiscardApi(_ReviewApi):
    """Drop held deliveries; their runs go on with the next step."""

    review = staticmethod(deliveries_discard)

    @extend_schema(request=ReviewInputSerializer, responses=ReviewOutputSerializer)
    def post(self, request):
        return super().post(request)


def _providers_help() -> str:
    from .channels.providers import PROVIDERS, providers_of

    return "; ".join(f"{channel}: {', '.join(providers_of(channel))}" for channel in sorted({c for c, _ in PROVIDERS}))


_PROVIDERS_HELP = _providers_help()


class ProviderInputSerializer(serializers.Serializer):
    provider = strict.CharField(max_length=40, help_text=_PROVIDERS_HELP)
    credentials = serializers.JSONField(help_text="The provider's secrets; stored encrypted, never shown again.")
    options = serializers.JSONField(required=False, default=dict, help_text="The provider's other settings.")
    organization = strict.UUIDField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Configure it for one organization of the product only.",
    )


class ProviderOutputSerializer(serializers.Serializer):
    id = strict.UUIDField()
    channel = strict.CharField()
    provider = strict.CharField()
    organization = strict.UUIDField(source="organization_id", allow_null=True)
    options = serializers.JSONField()
    credentials_set = serializers.SerializerMethodField(help_text="Which credentials are stored (never their values).")
    events_webhook = serializers.SerializerMethodField(
        help_text=(
            "Email providers that report events: the URL to give the provider, with HTTP basic auth user `rowbell` "
            "and a secret shown once (when first configured, and by rotate-events-secret)."
        )
    )
    updated_at = serializers.DateTimeField()

    def get_credentials_set(self, obj) -> list[str]:
        import json

        # Only those given a value: an SMTP server without authentication stores blank username and password.
        return sorted(name for name, value in json.loads(obj.credentials).items() if value not in ("", None))

    @extend_schema_field(serializers.JSONField(allow_null=True))
    def get_events_webhook(self, obj):
        from .provider_events import USERNAME, provider_events_url

        url = provider_events_url(obj)
        if not url:
            return None
        shown = {"url": url, "username": USERNAME, "secret": "********"}
        if getattr(obj, "events_secret_new", ""):
            shown.update(
                secret=obj.events_secret_new, url_with_secret=provider_events_url(obj, secret=obj.events_secret_new)
            )
        return shown


def _organization_of(request, organization_id):
    if organization_id is None:
        return None
    organization = Organization.objects.filter(id=organization_id, product_id=request.user.product_id).first()
    if organization is None:
        raise InvalidInput("No organization with this id in this product.", field="organization")
    return organization


class ProviderListApi(APIView):
    """The providers configured for the product and its organizations (credentials never shown)."""

    permission_classes = [IsProduct]

    @extend_schema(responses=ProviderOutputSerializer(many=True))
    def get(self, request):
        from .models import ProviderConfig

        configs = ProviderConfig.objects.filter(product_id=request.user.product_id).order_by("channel", "created_at")
        return Response(ProviderOutputSerializer(configs, many=True).data)


class ProviderDetailApi(APIView):
    """Set (PUT) or remove (DELETE) the provider of a channel (email, sms, push or chat)."""

    permission_classes = [IsProduct]

    @extend_schema(request=ProviderInputSerializer, responses=ProviderOutputSerializer)
    def put(self, request, channel):
        data = ProviderInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        config = provider_config_put(
            product=request.user.product,
            channel=channel,
            provider=values["provider"],
            credentials=values["credentials"],
            options=values["options"],
            organization=_organization_of(request, values["organization"]),
            actor=request.user.actor,
        )
        return Response(ProviderOutputSerializer(config).data)

    @extend_schema(parameters=[OpenApiParameter("organization", str, required=False)], responses={204: None})
    def delete(self, request, channel):
        given = request.query_params.get("organization")
        if given is not None and uuid_or_none(given) is None:
            raise InvalidInput("Must be an organization id.", field="organization")
        organization = _organization_of(request, uuid_or_none(given))
        if not provider_config_delete(
            product=request.user.product, channel=channel, organization=organization, actor=request.user.actor
        ):
            raise NotFound("No provider is configured for this channel.")
        return Response(status=status.HTTP_204_NO_CONTENT)


class ProviderRotateEventsSecretApi(APIView):
    """A new basic-auth secret for the channel's provider event webhook (email), shown once in
    `events_webhook`; the previous one stops working at once."""

    permission_classes = [IsProduct]

    class RotateEventsInputSerializer(serializers.Serializer):
        organization = strict.UUIDField(required=False, allow_null=True, default=None)

    @extend_schema(request=RotateEventsInputSerializer, responses=ProviderOutputSerializer)
    def post(self, request, channel):
        from .models import ProviderConfig
        from .services import provider_config_rotate_events_secret

        data = self.RotateEventsInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        organization = _organization_of(request, data.validated_data["organization"])
        config = ProviderConfig.objects.filter(
            product_id=request.user.product_id, organization=organization, channel=channel
        ).first()
        if config is None:
            raise NotFound("No provider is configured for this channel.")
        config = provider_config_rotate_events_secret(config=config, actor=request.user.actor)
        return Response(ProviderOutputSerializer(config).data)


class MetricsApi(APIView):
    """Delivery figures per workflow and channel over a time range (deliveries created in it)."""

    permission_classes = [IsProductOrOrganization]

    class FilterSerializer(strict.QuerySerializer):
        since = serializers.DateTimeField(required=False, help_text="Default: 24 hours before `until`.")
        until = serializers.DateTimeField(required=False, help_text="Default: now.")
        workflow = strict.SlugField(required=False, max_length=100)
        channel = strict.CharField(required=False, max_length=20)

        def validate_channel(self, value: str) -> str:
            """A channel Rowbell has: an unknown one is refused with the list, not answered with no figures."""
            from .channels import channel_kinds

            if value not in channel_kinds():
                valid = ", ".join(f'"{kind}"' for kind in channel_kinds())
                raise serializers.ValidationError(f'"{value}" is not a valid choice; use one of {valid}.')
            return value

        def validate(self, attrs):
            from datetime import timedelta

            from django.utils import timezone

            attrs.setdefault("until", timezone.now())
            try:
                attrs.setdefault("since", attrs["until"] - timedelta(hours=24))
            except OverflowError:
                raise serializers.ValidationError({"until": ["Out of range."]}) from None
            if attrs["since"] >= attrs["until"]:
                raise serializers.ValidationError({"since": ["Must be before `until`."]})
            if attrs["until"] - attrs["since"] > timedelta(days=366):
                raise serializers.ValidationError({"since": ["The range is at most 366 days."]})
            return attrs

    class MetricsSerializer(serializers.Serializer):
        workflow = strict.CharField(allow_null=True)
        channel = strict.CharField()
        total = strict.IntegerField()
        sent = strict.IntegerField()
        delivered = strict.IntegerField()
        failed = strict.IntegerField()
        bounced = strict.IntegerField()
        skipped = strict.IntegerField()
        opened = strict.IntegerField()
        clicked = strict.IntegerField()
        open_rate = strict.FloatField(allow_null=True)
        click_rate = strict.FloatField(allow_null=True)
        latency_ms = serializers.DictField(child=strict.FloatField(allow_null=True))

    class MetricsResponseSerializer(serializers.Serializer):
        since = serializers.DateTimeField()
        until = serializers.DateTimeField()
        metrics = serializers.ListField(child=serializers.DictField())

    @extend_schema(parameters=[FilterSerializer], responses=MetricsResponseSerializer)
    def get(self, request):
        from .selectors import delivery_metrics

        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        values = filters.validated_data
        rows = delivery_metrics(tenant=request.user, **values)
        return Response(
            {
                "since": values["since"],
                "until": values["until"],
                "metrics": self.MetricsSerializer(rows, many=True).data,
            }
        )
