from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core import fields as strict
from apps.core.known_fields import KnownFieldsOnly
from apps.core.openapi import ErrorSerializer
from apps.core.permissions import IsProduct

from .services import PROMPT_MAX, workflow_generate


class GenerateInputSerializer(KnownFieldsOnly, serializers.Serializer):
    prompt = strict.CharField(
        max_length=PROMPT_MAX,
        help_text='The workflow in words, e.g. "when an order becomes paid, email its customer a receipt".',
    )
    connection = strict.UUIDField(
        required=False, help_text="A connection whose tables the workflow may be started by and read."
    )
    workflow = strict.CharField(
        required=False,
        max_length=100,
        help_text="The key of a workflow to change: the answer is a change to its draft.",
    )


class WorkflowGenerateApi(APIView):
    """Describe a workflow in words and get a draft: checked as `POST /api/v1/workflows` checks a workflow,
    previewed, never saved. Save it with `POST /api/v1/workflows` (or `PUT` for a change), then publish it."""

    permission_classes = [IsProduct]

    @extend_schema(
        request=GenerateInputSerializer,
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="A draft: explanation, workflow, preview, diff."),
            404: OpenApiResponse(ErrorSerializer, description="No such connection or workflow."),
            409: OpenApiResponse(ErrorSerializer, description="The builder is not configured: what to set."),
            422: OpenApiResponse(
                OpenApiTypes.OBJECT, description="No draft passed the checks: the errors; nothing saved."
            ),
            429: OpenApiResponse(ErrorSerializer, description="The product's daily builder budget is spent."),
            502: OpenApiResponse(ErrorSerializer, description="The customer database cannot be read."),
            503: OpenApiResponse(ErrorSerializer, description="The model's endpoint failed: why."),
        },
    )
    def post(self, request):
        body = GenerateInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        values = body.validated_data
        answer = workflow_generate(
            product=request.user.product,
            prompt=values["prompt"],
            connection_id=values.get("connection"),
            workflow_key=values.get("workflow"),
            actor=request.user.actor,
        )
        return Response(answer, status=200 if answer["outcome"] == "draft" else 422)
