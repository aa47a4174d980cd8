from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core import fields as strict
from apps.core.exceptions import Forbidden
from apps.core.known_fields import KnownFieldsOnly
from apps.core.openapi import ErrorSerializer
from apps.core.permissions import IsPlatform, IsPlatformOrProduct, IsProduct, IsTenant

from .models import KeyScope
from .selectors import api_key_get, api_key_list, organization_get, organization_list, product_get
from .services import (
    EXTERNAL_ID_MAX_LENGTH,
    api_key_revoke,
    api_key_rotate,
    organization_create,
    organization_update,
    product_create,
    product_settings_update,
)


class NameInputSerializer(serializers.Serializer):
    name = strict.CharField(max_length=200, trim_whitespace=True)


class ProductOutputSerializer(serializers.Serializer):
    id = strict.UUIDField()
    name = strict.CharField()
    sandbox = strict.BooleanField()
    escalation_webhook = strict.UUIDField(source="escalation_webhook_id", allow_null=True)
    retention_days = strict.IntegerField(
        allow_null=True, help_text="Days finished work is kept; null: the service's default (ROWBELL_RETENTION_DAYS)."
    )
    ai_base_url = strict.CharField(help_text="The workflow builder's endpoint for this product; blank: the service's.")
    ai_model = strict.CharField(help_text="The workflow builder's model for this product; blank: the service's.")
    ai_api_key_set = serializers.SerializerMethodField(help_text="Whether the product has a builder key of its own.")
    created_at = serializers.DateTimeField()

    def get_ai_api_key_set(self, product) -> bool:
        return bool(product.ai_api_key)


class ProductUpdateInputSerializer(serializers.Serializer):
    sandbox = strict.BooleanField(required=False, help_text="Hold every delivery of the product for review.")
    escalation_webhook = strict.UUIDField(
        required=False, allow_null=True, help_text="Webhook endpoint told about failed runs (null: none)."
    )
    retention_days = strict.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=3650,
        help_text="Days its finished runs, deliveries, requests and recorded events are kept; null: the service's "
        "default (ROWBELL_RETENTION_DAYS). Held and unfinished work is never pruned.",
    )
    ai_base_url = strict.URLField(
        required=False,
        allow_blank=True,
        max_length=500,
        help_text="Platform keys only: the OpenAI-compatible endpoint of this product's workflow builder.",
    )
    ai_model = strict.CharField(required=False, allow_blank=True, max_length=200, help_text="Platform keys only.")
    ai_api_key = strict.CharField(
        required=False, allow_blank=True, max_length=500, write_only=True, help_text="Platform keys only; never shown."
    )


class ProductCreatedSerializer(ProductOutputSerializer):
    api_key = strict.CharField(help_text="Shown once: store it now.")


EXTERNAL_ID_HELP = (
    "The organization's id in the product's own database (e.g. the value of `orders.org_id`, as text: 42 is "
    '"42"), unique within the product; null when unset.'
)


def _external_id_field(**kwargs):
    return strict.CharField(
        max_length=EXTERNAL_ID_MAX_LENGTH,
        allow_null=True,
        allow_blank=True,
        trim_whitespace=True,
        help_text=EXTERNAL_ID_HELP + " Null or an empty string clears it.",
        **kwargs,
    )


SANDBOX_HELP = "Hold every delivery of the organization's runs for review (the admin's review queue)."


class OrganizationCreateInputSerializer(KnownFieldsOnly, serializers.Serializer):
    name = strict.CharField(max_length=200, trim_whitespace=True)
    external_id = _external_id_field(required=False, default=None)
    sandbox = strict.BooleanField(required=False, default=False, help_text=SANDBOX_HELP)


class OrganizationUpdateInputSerializer(KnownFieldsOnly, serializers.Serializer):
    name = strict.CharField(max_length=200, trim_whitespace=True, required=False)
    external_id = _external_id_field(required=False)
    sandbox = strict.BooleanField(required=False, help_text=SANDBOX_HELP)


class OrganizationOutputSerializer(serializers.Serializer):
    id = strict.UUIDField()
    product_id = strict.UUIDField()
    name = strict.CharField()
    external_id = strict.CharField(allow_null=True, help_text=EXTERNAL_ID_HELP)
    sandbox = strict.BooleanField(help_text=SANDBOX_HELP)
    created_at = serializers.DateTimeField()


EXTERNAL_ID_TAKEN = OpenApiResponse(
    ErrorSerializer,
    description="Another organization of the product has this `external_id`: choose another, or clear it there.",
)


class OrganizationCreatedSerializer(OrganizationOutputSerializer):
    api_key = strict.CharField(help_text="Shown once: store it now.")


class RotateInputSerializer(serializers.Serializer):
    grace_seconds = strict.IntegerField(
        required=False,
        default=0,
        min_value=0,
        max_value=7 * 24 * 3600,
        help_text="0 (default): the previous key stops working at once. Otherwise it keeps working this long.",
    )


class RotateOutputSerializer(serializers.Serializer):
    api_key = strict.CharField(help_text="The new key, shown once.")
    previous_keys_stop_at = serializers.DateTimeField(allow_null=True)


class ProductCreateApi(APIView):
    permission_classes = [IsPlatform]

    @extend_schema(request=NameInputSerializer, responses={201: ProductCreatedSerializer})
    def post(self, request):
        data = NameInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        product, raw = product_create(name=data.validated_data["name"], actor=request.user.actor)
        out = ProductOutputSerializer(product).data | {"api_key": raw}
        return Response(out, status=status.HTTP_201_CREATED)


class ProductDetailApi(APIView):
    permission_classes = [IsPlatformOrProduct]

    @extend_schema(responses=ProductOutputSerializer)
    def get(self, request, product_id):
        return Response(ProductOutputSerializer(product_get(tenant=request.user, product_id=product_id)).data)

    @extend_schema(request=ProductUpdateInputSerializer, responses=ProductOutputSerializer)
    def patch(self, request, product_id):
        product = product_get(tenant=request.user, product_id=product_id)
        data = ProductUpdateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        ai = {k: values.pop(k) for k in ("ai_base_url", "ai_model", "ai_api_key") if k in values}
        if ai and not request.user.is_platform:
            # The builder's endpoint is where a product's prompts and schema are sent: the platform chooses it.
            raise Forbidden("Only a platform key sets the product's builder model.", field=sorted(ai)[0])
        product = product_settings_update(product=product, actor=request.user.actor, ai=ai, **values)
        return Response(ProductOutputSerializer(product).data)


class ProductRotateKeyApi(APIView):
    permission_classes = [IsPlatformOrProduct]

    @extend_schema(request=RotateInputSerializer, responses=RotateOutputSerializer)
    def post(self, request, product_id):
        product = product_get(tenant=request.user, product_id=product_id)
        data = RotateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        _, raw, stop_at = api_key_rotate(product=product, actor=request.user.actor, **data.validated_data)
        return Response(RotateOutputSerializer({"api_key": raw, "previous_keys_stop_at": stop_at}).data)


class OrganizationListCreateApi(APIView):
    permission_classes = [IsTenant]

    @extend_schema(responses=OrganizationOutputSerializer(many=True))
    def get(self, request):
        return Response(OrganizationOutputSerializer(organization_list(tenant=request.user), many=True).data)

    @extend_schema(
        request=OrganizationCreateInputSerializer,
        responses={201: OrganizationCreatedSerializer, 409: EXTERNAL_ID_TAKEN},
    )
    def post(self, request):
        if not IsProduct().has_permission(request, self):
            raise Forbidden("Organizations are created with their product's key.")
        data = OrganizationCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        organization, raw = organization_create(
            product=request.user.product, actor=request.user.actor, **data.validated_data
        )
        out = OrganizationOutputSerializer(organization).data | {"api_key": raw}
        return Response(out, status=status.HTTP_201_CREATED)


class OrganizationDetailApi(APIView):
    permission_classes = [IsTenant]

    @extend_schema(responses=OrganizationOutputSerializer)
    def get(self, request, organization_id):
        organization = organization_get(tenant=request.user, organization_id=organization_id)
        return Response(OrganizationOutputSerializer(organization).data)

    @extend_schema(
        request=OrganizationUpdateInputSerializer,
        responses={200: OrganizationOutputSerializer, 409: EXTERNAL_ID_TAKEN},
    )
    def patch(self, request, organization_id):
        # The external id decides which organization a customer row belongs to: an organization's own key
        # may not move it (it could claim rows of a sibling that has none yet).
        if not IsPlatformOrProduct().has_permission(request, self):
            raise Forbidden("Organizations are changed with their product's key (or a platform key).")
        organization = organization_get(tenant=request.user, organization_id=organization_id)
        data = OrganizationUpdateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        organization = organization_update(organization=organization, actor=request.user.actor, **data.validated_data)
        return Response(OrganizationOutputSerializer(organization).data)


class OrganizationRotateKeyApi(APIView):
    permission_classes = [IsTenant]

    @extend_schema(request=RotateInputSerializer, responses=RotateOutputSerializer)
    def post(self, request, organization_id):
        organization = organization_get(tenant=request.user, organization_id=organization_id)
        data = RotateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        _, raw, stop_at = api_key_rotate(
            product=organization.product,
            organization=organization,
            actor=request.user.actor,
            **data.validated_data,
        )
        return Response(RotateOutputSerializer({"api_key": raw, "previous_keys_stop_at": stop_at}).data)


class ApiKeyOutputSerializer(serializers.Serializer):
    prefix = strict.CharField()
    name = strict.CharField()
    scope = strict.ChoiceField(choices=KeyScope.choices)
    product_id = strict.UUIDField(allow_null=True)
    organization_id = strict.UUIDField(allow_null=True)
    created = serializers.DateTimeField()
    expiry_date = serializers.DateTimeField(allow_null=True)
    revoked = strict.BooleanField()


class ApiKeyListApi(APIView):
    permission_classes = [IsTenant]

    @extend_schema(responses=ApiKeyOutputSerializer(many=True))
    def get(self, request):
        return Response(ApiKeyOutputSerializer(api_key_list(tenant=request.user)[:500], many=True).data)


class ApiKeyRevokeApi(APIView):
    permission_classes = [IsTenant]

    @extend_schema(request=None, responses=ApiKeyOutputSerializer)
    def post(self, request, prefix):
        key = api_key_revoke(key=api_key_get(tenant=request.user, prefix=prefix), actor=request.user.actor)
        return Response(ApiKeyOutputSerializer(key).data)
