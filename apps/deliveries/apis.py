from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.tenants.permissions import IsProduct

from .selectors import webhook_endpoint_get, webhook_endpoint_list
from .services import webhook_endpoint_create, webhook_endpoint_disable, webhook_endpoint_enable


class WebhookInputSerializer(serializers.Serializer):
    url = serializers.URLField(max_length=2000)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    accept_any_2xx = serializers.BooleanField(required=False, default=False,
                                              help_text="Count any 2xx as success (default: only 200).")
    source = serializers.JSONField(required=False, help_text=(
        'Row events: {"connection": "<id>", "table": "public.orders", "events": ["row.created", "row.updated", '
        '"row.deleted"], "columns": ["status"]} (columns: only updates that change them).'))


class WebhookOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    url = serializers.CharField()
    description = serializers.CharField()
    accept_any_2xx = serializers.BooleanField()
    enabled = serializers.BooleanField()
    source = serializers.JSONField(allow_null=True)
    created_at = serializers.DateTimeField()


class WebhookCreatedSerializer(WebhookOutputSerializer):
    secret = serializers.CharField(help_text="whsec_... signing secret, shown once.")


class WebhookListCreateApi(APIView):
    permission_classes = [IsProduct]

    @extend_schema(responses=WebhookOutputSerializer(many=True))
    def get(self, request):
        return Response(WebhookOutputSerializer(webhook_endpoint_list(tenant=request.user), many=True).data)

    @extend_schema(request=WebhookInputSerializer, responses={201: WebhookCreatedSerializer})
    def post(self, request):
        data = WebhookInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint = webhook_endpoint_create(product=request.user.product, actor=request.user.actor,
                                           **data.validated_data)
        return Response(WebhookCreatedSerializer(endpoint).data, status=status.HTTP_201_CREATED)


class WebhookDetailApi(APIView):
    permission_classes = [IsProduct]

    @extend_schema(responses=WebhookOutputSerializer)
    def get(self, request, endpoint_id):
        endpoint = webhook_endpoint_get(tenant=request.user, endpoint_id=endpoint_id)
        return Response(WebhookOutputSerializer(endpoint).data)


class WebhookDisableApi(APIView):
    permission_classes = [IsProduct]

    @extend_schema(request=None, responses=WebhookOutputSerializer)
    def post(self, request, endpoint_id):
        endpoint = webhook_endpoint_get(tenant=request.user, endpoint_id=endpoint_id)
        return Response(WebhookOutputSerializer(webhook_endpoint_disable(endpoint=endpoint,
                                                                         actor=request.user.actor)).data)


class WebhookEnableApi(APIView):
    permission_classes = [IsProduct]

    @extend_schema(request=None, responses=WebhookOutputSerializer)
    def post(self, request, endpoint_id):
        endpoint = webhook_endpoint_get(tenant=request.user, endpoint_id=endpoint_id)
        return Response(WebhookOutputSerializer(webhook_endpoint_enable(endpoint=endpoint,
                                                                        actor=request.user.actor)).data)
