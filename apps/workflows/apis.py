from typing import TypeVar

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core import fields as strict
from apps.core.exceptions import Forbidden, InvalidInput
from apps.core.known_fields import KnownFieldsOnly
from apps.core.openapi import ErrorFieldSerializer, ErrorSerializer
from apps.core.parsers import ExactJSONParser
from apps.core.permissions import IsProduct, IsProductOrOrganization

from .definition.format import DEFINITION_FIELDS, Retry, Step, Tracking, Trigger, WorkflowCreate, WorkflowUpdate
from .definition.json_schema import workflow_json_schema
from .definition.paths import structure_check
from .openapi import FormatField
from .selectors import workflow_get, workflow_list, workflow_version_list
from .services import (
    preview_organization,
    workflow_create,
    workflow_preview,
    workflow_preview_outcome,
    workflow_preview_sample,
    workflow_publish,
    workflow_unpublish,
    workflow_update,
)


class WorkflowOutputSerializer(serializers.Serializer):
    key = strict.CharField()
    name = strict.CharField()
    trigger = FormatField(format_type=Trigger, source="draft.trigger")
    steps = FormatField(format_type=list[Step], source="draft.steps")
    retry = FormatField(format_type=Retry, source="draft.retry", default=None, allow_null=True)
    tracking = FormatField(format_type=Tracking, source="draft.tracking", default=None, allow_null=True)
    sandbox = strict.BooleanField()
    published_version = strict.IntegerField(source="published_version.version", allow_null=True, default=None)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class VersionOutputSerializer(serializers.Serializer):
    version = strict.IntegerField()
    definition = serializers.JSONField()
    published_at = serializers.DateTimeField()
    published_by = strict.CharField()


_Body = TypeVar("_Body", bound=WorkflowUpdate)  # WorkflowUpdate, or WorkflowCreate


def _workflow_body(model: type[_Body], data, *, path_key: str | None = None) -> tuple[_Body, dict]:
    """A workflow body checked against the format: (the body, its definition as sent, for the service to
    validate in full and normalize). A PUT's `key`, if sent, must be the path's `path_key`. Raises
    ValidationError naming every field at fault, unknown ones too, all at once."""
    body, errors = structure_check(model, data)
    sent_key = data.get("key") if isinstance(data, dict) else None
    if path_key is not None and sent_key is not None and sent_key != path_key:
        reason = f"A workflow's key cannot be changed: send '{path_key}', as in the path, or leave it out."
        errors.setdefault("key", []).append(reason)
    if body is None or errors:  # when the body has errors
        raise ValidationError(errors)
    return body, {key: data[key] for key in DEFINITION_FIELDS if key in data}


class WorkflowListCreateApi(APIView):
    permission_classes = [IsProductOrOrganization]

    @extend_schema(responses=WorkflowOutputSerializer(many=True))
    def get(self, request):
        return Response(WorkflowOutputSerializer(workflow_list(tenant=request.user), many=True).data)

    @extend_schema(
        request=WorkflowCreate,
        responses={
            201: WorkflowOutputSerializer,
            409: OpenApiResponse(
                ErrorSerializer, description="A workflow with this key already exists in the product."
            ),
        },
    )
    def post(self, request):
        self.permission_denied_unless_product(request)
        body, definition = _workflow_body(WorkflowCreate, request.data)
        workflow = workflow_create(
            product=request.user.product,
            key=body.key,
            name=body.name or "",
            definition=definition,
            sandbox=bool(body.sandbox),
            actor=request.user.actor,
        )
        return Response(WorkflowOutputSerializer(workflow).data, status=status.HTTP_201_CREATED)

    def permission_denied_unless_product(self, request):
        if not IsProduct().has_permission(request, self):
            self.permission_denied(request, message=IsProduct.message)


class WorkflowDetailApi(APIView):
    permission_classes = [IsProductOrOrganization]

    @extend_schema(responses=WorkflowOutputSerializer)
    def get(self, request, key):
        return Response(WorkflowOutputSerializer(workflow_get(tenant=request.user, key=key)).data)

    @extend_schema(request=WorkflowUpdate, responses=WorkflowOutputSerializer)
    def put(self, request, key):
        if not IsProduct().has_permission(request, self):
            self.permission_denied(request, message=IsProduct.message)
        workflow = workflow_get(tenant=request.user, key=key)
        body, definition = _workflow_body(WorkflowUpdate, request.data, path_key=key)
        workflow = workflow_update(
            workflow=workflow, name=body.name, definition=definition, sandbox=body.sandbox, actor=request.user.actor
        )
        return Response(WorkflowOutputSerializer(workflow).data)


class WorkflowPublishApi(APIView):
    permission_classes = [IsProduct]

    @extend_schema(
        request=None,
        responses={
            201: VersionOutputSerializer,
            409: OpenApiResponse(
                ErrorSerializer, description="The draft changed while it was being published: publish again."
            ),
        },
    )
    def post(self, request, key):
        version = workflow_publish(workflow=workflow_get(tenant=request.user, key=key), actor=request.user.actor)
        return Response(VersionOutputSerializer(version).data, status=status.HTTP_201_CREATED)


class UnpublishInputSerializer(KnownFieldsOnly, serializers.Serializer):
    cancel_runs = strict.BooleanField(
        default=False, help_text=("Cancel its queued and waiting runs too (default: let them finish on their version).")
    )


class WorkflowUnpublishApi(APIView):
    """Stop new runs: triggers refuse the workflow and its database events launch nothing."""

    permission_classes = [IsProduct]

    @extend_schema(request=UnpublishInputSerializer, responses=WorkflowOutputSerializer)
    def post(self, request, key):
        data = UnpublishInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        workflow = workflow_unpublish(
            workflow=workflow_get(tenant=request.user, key=key),
            cancel_runs=data.validated_data["cancel_runs"],
            actor=request.user.actor,
        )
        return Response(WorkflowOutputSerializer(workflow).data)


class WorkflowVersionListApi(APIView):
    permission_classes = [IsProductOrOrganization]

    @extend_schema(responses=VersionOutputSerializer(many=True))
    def get(self, request, key):
        workflow = workflow_get(tenant=request.user, key=key)
        return Response(VersionOutputSerializer(workflow_version_list(workflow=workflow), many=True).data)


class PreviewInputSerializer(KnownFieldsOnly, serializers.Serializer):
    data = strict.JSONField(required=False, default=dict)
    recipient = strict.JSONField(required=False, default=dict)
    event = strict.JSONField(required=False, help_text="For database triggers: {id, type, table, ids, ...}.")
    row = strict.JSONField(required=False, help_text="For database triggers: the row as steps see it.")
    rows = strict.JSONField(required=False, help_text="For database triggers: the event's rows.")
    batch = strict.JSONField(required=False, help_text="After a batch step: {key, items, count}.")
    row_key = strict.JSONField(
        required=False,
        help_text=(
            "For database triggers: preview on this real row of the watched table (its key; a list for a composite "
            "key), read with its related rows and recipient as a run would. Overrides event, row and rows."
        ),
    )
    event_id = strict.JSONField(
        required=False,
        help_text="For database triggers: preview on this recorded event's row (`evt_123`, or 123), the first unless "
        "row_key.",
    )

    def validate_event_id(self, value):
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise serializers.ValidationError("An event id: evt_123 (or 123).")
        return value


class PreviewProviderSerializer(serializers.Serializer):
    name = strict.CharField(help_text="The provider, e.g. smtp, twilio.")
    of = strict.ChoiceField(choices=["organization", "product"], help_text="Whose configuration it is.")


class PreviewStepSerializer(serializers.Serializer):
    step = strict.CharField()
    path = strict.CharField(help_text="Where the step is in the definition.")
    type = strict.CharField()
    channel = strict.CharField(required=False)
    target = strict.CharField(required=False)
    payload = serializers.JSONField(required=False, help_text="The rendered message.")
    skipped = strict.CharField(required=False, help_text="Why nothing would be sent.")
    error = strict.CharField(required=False, help_text="Why the step would fail (the first of `errors`).")
    errors = ErrorFieldSerializer(
        many=True,
        required=False,
        help_text=("Every template of the step that cannot render with this sample, each with its field and why."),
    )
    taken = serializers.JSONField(required=False, help_text="A branch: the index taken, or 'otherwise'.")
    provider = PreviewProviderSerializer(
        required=False,
        allow_null=True,
        help_text="A message that would be sent: the provider that would carry it; null when none is configured.",
    )


class PreviewOrganizationSerializer(serializers.Serializer):
    id = strict.UUIDField(required=False)
    external_id = strict.CharField(allow_null=True)
    name = strict.CharField(required=False)
    sandbox = strict.BooleanField(required=False)
    error = strict.CharField(required=False, help_text="Why the row routes to no organization.")


class PreviewOutputSerializer(serializers.Serializer):
    steps = PreviewStepSerializer(many=True)
    held = strict.BooleanField(
        help_text="Whether the run's messages would be held for review (the workflow, product or organization "
        "is sandboxed)."
    )
    organization = PreviewOrganizationSerializer(
        required=False, help_text="The organization the run would belong to (a trigger's `organization`)."
    )
    error = strict.CharField(required=False, help_text="Why the run would fail before its steps, escalated.")


class WorkflowPreviewApi(APIView):
    """Render every step of the draft with sample data; nothing is sent or recorded."""

    permission_classes = [IsProductOrOrganization]
    parser_classes = [ExactJSONParser]  # a row_key of numeric(30,20) names its row with every digit

    @extend_schema(request=PreviewInputSerializer, responses=PreviewOutputSerializer)
    def post(self, request, key):
        workflow = workflow_get(tenant=request.user, key=key)
        data = PreviewInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        sample = dict(data.validated_data)
        row_key, event_id = sample.pop("row_key", None), sample.pop("event_id", None)
        if row_key is not None or event_id is not None:
            if not IsProduct().has_permission(request, self):
                # A real row may belong to any organization of the product: only the product's key reads one.
                raise Forbidden(
                    "Previews on real rows (row_key, event_id) need the product's key.",
                    field="row_key" if row_key is not None else "event_id",
                )
            clashing = [k for k in ("event", "row", "rows", "batch") if k in request.data]
            if clashing:
                raise InvalidInput(
                    f"{clashing[0]} would be replaced by the real row that row_key or event_id reads: leave it out.",
                    field=clashing[0],
                )
            real = workflow_preview_sample(workflow=workflow, row_key=row_key, event_id=event_id)
            given = {k: v for k, v in sample.items() if k in ("data", "recipient") and v}
            sample = {**sample, **real, **given}
        elif request.user.organization is not None:  # an organization's key: its runs are its own
            sample["organization"] = preview_organization(request.user.organization)
        steps = workflow_preview(workflow=workflow, sample=sample, real=row_key is not None or event_id is not None)
        return Response({"steps": steps, **workflow_preview_outcome(workflow=workflow, sample=sample)})


class WorkflowSchemaApi(APIView):
    """The JSON Schema (draft 2020-12) of a workflow as `POST /api/v1/workflows` takes it (`PUT` takes the same
    without `key`), for editors and CI checks. Public: it is the same for every product, and says nothing of
    any."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    @extend_schema(auth=[], responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        return Response(workflow_json_schema())
