from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core import fields as strict
from apps.core.permissions import IsProduct, IsProductOrOrganization

from .selectors import workflow_get, workflow_list, workflow_version_list
from .services import workflow_create, workflow_preview, workflow_publish, workflow_unpublish, workflow_update


class WorkflowOutputSerializer(serializers.Serializer):
    key = strict.CharField()
    name = strict.CharField()
    trigger = serializers.JSONField(source="draft.trigger")
    steps = serializers.JSONField(source="draft.steps")
    retry = serializers.JSONField(source="draft.retry", default=None)
    sandbox = strict.BooleanField()
    published_version = strict.IntegerField(source="published_version.version", allow_null=True,
                                                 default=None)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class VersionOutputSerializer(serializers.Serializer):
    version = strict.IntegerField()
    definition = serializers.JSONField()
    published_at = serializers.DateTimeField()
    published_by = strict.CharField()


class DefinitionInputSerializer(serializers.Serializer):
    name = strict.CharField(max_length=200, required=False, allow_blank=True)
    trigger = serializers.JSONField(required=False, help_text=(
        '{"type": "api"} (default), or {"type": "database", "connection", "table", "events" | '
        '"classification" | "through"} as row-event webhooks take.'))
    steps = serializers.JSONField(help_text="Ordered list of steps; see the README for the step types.")
    retry = serializers.JSONField(required=False, help_text=(
        'The retry policy of its steps and deliveries: {"max_attempts": 8, "backoff": "10s", "max_backoff": "6h"}.'))
    sandbox = strict.BooleanField(required=False, help_text="Hold its deliveries for review instead of sending.")

    def definition(self) -> dict:
        data = self.validated_data
        definition = {"trigger": data.get("trigger", {"type": "api"}), "steps": data["steps"]}
        if "retry" in data:
            definition["retry"] = data["retry"]
        return definition


class WorkflowCreateInputSerializer(DefinitionInputSerializer):
    key = strict.SlugField(max_length=100)


class WorkflowListCreateApi(APIView):
    permission_classes = [IsProductOrOrganization]

    @extend_schema(responses=WorkflowOutputSerializer(many=True))
    def get(self, request):
        return Response(WorkflowOutputSerializer(workflow_list(tenant=request.user), many=True).data)

    @extend_schema(request=WorkflowCreateInputSerializer, responses={201: WorkflowOutputSerializer})
    def post(self, request):
        self.permission_denied_unless_product(request)
        data = WorkflowCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        workflow = workflow_create(product=request.user.product, key=data.validated_data["key"],
                                   name=data.validated_data.get("name", ""), definition=data.definition(),
                                   sandbox=data.validated_data.get("sandbox", False), actor=request.user.actor)
        return Response(WorkflowOutputSerializer(workflow).data, status=status.HTTP_201_CREATED)

    def permission_denied_unless_product(self, request):
        if not IsProduct().has_permission(request, self):
            self.permission_denied(request, message=IsProduct.message)


class WorkflowDetailApi(APIView):
    permission_classes = [IsProductOrOrganization]

    @extend_schema(responses=WorkflowOutputSerializer)
    def get(self, request, key):
        return Response(WorkflowOutputSerializer(workflow_get(tenant=request.user, key=key)).data)

    @extend_schema(request=DefinitionInputSerializer, responses=WorkflowOutputSerializer)
    def put(self, request, key):
        if not IsProduct().has_permission(request, self):
            self.permission_denied(request, message=IsProduct.message)
        workflow = workflow_get(tenant=request.user, key=key)
        data = DefinitionInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        workflow = workflow_update(workflow=workflow, name=data.validated_data.get("name"),
                                   definition=data.definition(), sandbox=data.validated_data.get("sandbox"),
                                   actor=request.user.actor)
        return Response(WorkflowOutputSerializer(workflow).data)


class WorkflowPublishApi(APIView):
    permission_classes = [IsProduct]

    @extend_schema(request=None, responses={201: VersionOutputSerializer})
    def post(self, request, key):
        version = workflow_publish(workflow=workflow_get(tenant=request.user, key=key), actor=request.user.actor)
        return Response(VersionOutputSerializer(version).data, status=status.HTTP_201_CREATED)


class UnpublishInputSerializer(serializers.Serializer):
    cancel_runs = strict.BooleanField(default=False, help_text=(
        "Cancel its queued and waiting runs too (default: let them finish on their version)."))


class WorkflowUnpublishApi(APIView):
    """Stop new runs: triggers refuse the workflow and its database events launch nothing."""

    permission_classes = [IsProduct]

    @extend_schema(request=UnpublishInputSerializer, responses=WorkflowOutputSerializer)
    def post(self, request, key):
        data = UnpublishInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        workflow = workflow_unpublish(workflow=workflow_get(tenant=request.user, key=key),
                                      cancel_runs=data.validated_data["cancel_runs"], actor=request.user.actor)
        return Response(WorkflowOutputSerializer(workflow).data)


class WorkflowVersionListApi(APIView):
    permission_classes = [IsProductOrOrganization]

    @extend_schema(responses=VersionOutputSerializer(many=True))
    def get(self, request, key):
        workflow = workflow_get(tenant=request.user, key=key)
        return Response(VersionOutputSerializer(workflow_version_list(workflow=workflow), many=True).data)


class PreviewInputSerializer(serializers.Serializer):
    data = serializers.JSONField(required=False, default=dict)
    recipient = serializers.JSONField(required=False, default=dict)
    event = serializers.JSONField(required=False, help_text="For database triggers: {id, type, table, ids, ...}.")
    row = serializers.JSONField(required=False, help_text="For database triggers: the row as steps see it.")


class PreviewStepSerializer(serializers.Serializer):
    step = strict.CharField()
    path = strict.CharField(help_text="Where the step is in the definition.")
    type = strict.CharField()
    channel = strict.CharField(required=False)
    target = strict.CharField(required=False)
    payload = serializers.JSONField(required=False, help_text="The rendered message.")
    skipped = strict.CharField(required=False, help_text="Why nothing would be sent.")
    error = strict.CharField(required=False, help_text="Why the step would fail.")
    taken = serializers.JSONField(required=False, help_text="A branch: the index taken, or 'otherwise'.")


class PreviewOutputSerializer(serializers.Serializer):
    steps = PreviewStepSerializer(many=True)


class WorkflowPreviewApi(APIView):
    """Render every step of the draft with sample data; nothing is sent or recorded."""

    permission_classes = [IsProductOrOrganization]

    @extend_schema(request=PreviewInputSerializer, responses=PreviewOutputSerializer)
    def post(self, request, key):
        workflow = workflow_get(tenant=request.user, key=key)
        data = PreviewInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return Response({"steps": workflow_preview(workflow=workflow, sample=data.validated_data)})
