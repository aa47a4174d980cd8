"""Webhook endpoints are created here: with a `source`, an endpoint is a row-event subscription, which
needs the connection's tables (the rest of the endpoint API is apps.deliveries')."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core import fields as strict
from apps.core.permissions import IsProduct
from apps.deliveries.apis import WebhookCreatedSerializer, WebhookOutputSerializer
from apps.deliveries.selectors import webhook_endpoint_list

from .services import subscription_create


class WebhookInputSerializer(serializers.Serializer):
    url = strict.URLField(max_length=2000)
    description = strict.CharField(max_length=200, required=False, allow_blank=True, default="")
    accept_any_2xx = strict.BooleanField(
        required=False, default=False, help_text="Count any 2xx as success (default: only 200)."
    )
    retry_schedule = strict.RetryScheduleField(
        required=False,
        default=None,
        help_text='The wait before each retry of its webhooks, e.g. ["5s", "5m", "30m", "2h"] (or seconds); null '
        "(the default) for the service's webhook schedule.",
    )
    source = serializers.JSONField(
        required=False,
        help_text=(
            'Row events: {"connection": "<id>", "table": "public.orders", "events": ["row.created", "row.updated", '
            '"row.deleted"], "columns": ["status"]} (columns: only updates that change them).'
        ),
    )


class WebhookListCreateApi(APIView):
    permission_classes = [IsProduct]

    @extend_schema(responses=WebhookOutputSerializer(many=True))
    def get(self, request):
        return Response(WebhookOutputSerializer(webhook_endpoint_list(tenant=request.user), many=True).data)

    @extend_schema(request=WebhookInputSerializer, responses={201: WebhookCreatedSerializer})
    def post(self, request):
        data = WebhookInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint = subscription_create(product=request.user.product, actor=request.user.actor, **data.validated_data)
        return Response(WebhookCreatedSerializer(endpoint).data, status=status.HTTP_201_CREATED)
