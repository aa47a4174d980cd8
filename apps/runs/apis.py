import re
from typing import Any, cast

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core import fields as strict
from apps.core.exceptions import InvalidInput
from apps.core.known_fields import KnownFieldsOnly
from apps.core.masking import sealed_masked
from apps.core.pagination import NewestFirst, paginated
from apps.core.parsers import ExactJSONParser
from apps.core.permissions import IsProduct, IsProductOrOrganization
from apps.core.text import unstorable_find
from apps.deliveries.channels import channel_get, channel_kinds
from apps.tenants.authentication import DeferredLiveCheckAuthentication
from apps.tenants.throttles import TriggerRateThrottle
from apps.workflows.selectors import workflow_get

from .engine import RERUN_VERSIONS, run_cancel, run_rerun
from .models import Priority, RunStatus
from .selectors import request_status, run_detail, run_get, run_list
from .services import trigger_create
from .triggers import trigger_source_get
from .triggers.backfill import BACKFILL_LIMIT, BACKFILL_MAX, workflow_backfill
from .triggers.database import run_event_summary

IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def recipient_clean(value) -> tuple[dict | None, dict]:
    """A recipient: an id string, or an object with `id` and any of `email`, `phone` (E.164), `push_token`
    or `push_tokens`, `chat_webhook` (an incoming webhook URL), `name`, plus any further properties
    templates may use; the channel that reads a property says what it may be (Channel.recipient_errors).
    Returns (recipient, errors)."""
    if isinstance(value, str):
        value = {"id": value}
    if not isinstance(value, dict):
        return None, {"": ["Must be a recipient id (string) or an object with an 'id'."]}
    errors = {}
    rid = value.get("id")
    if not isinstance(rid, (str, int)) or isinstance(rid, bool) or not str(rid).strip() or len(str(rid)) > 200:
        errors["id"] = ["Required: a string of 1 to 200 characters."]
    # Each channel checks the recipient properties it reads (email, phone, push_tokens, chat_webhook...).
    for kind in channel_kinds():
        errors.update(channel_get(kind).recipient_errors(value))
    if errors:
        return None, errors
    return {**value, "id": str(rid)}, {}


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "description": "A recipient id."},
            {
                "type": "object",
                "required": ["id"],
                "additionalProperties": True,
                "properties": {
                    "id": {"type": "string", "maxLength": 200},
                    "email": {"type": "string", "format": "email"},
                    "phone": {"type": "string", "description": "E.164, e.g. +14155550123"},
                    "name": {"type": "string"},
                },
            },
        ]
    }
)
class RecipientField(serializers.Field):
    def to_internal_value(self, value):
        recipient, errors = recipient_clean(value)
        if errors:
            raise serializers.ValidationError(errors.get("") or errors)
        return recipient

    def to_representation(self, value):
        return value


class TriggerInputSerializer(KnownFieldsOnly, serializers.Serializer):
    workflow = strict.SlugField(max_length=100)
    to = serializers.ListField(child=RecipientField(), min_length=1)
    data = serializers.DictField(required=False, default=dict)
    priority = strict.ChoiceField(choices=Priority.choices, required=False, default=Priority.NORMAL)

    def validate_to(self, value):
        if len(value) > settings.ROWBELL_MAX_RECIPIENTS:
            raise serializers.ValidationError(f"At most {settings.ROWBELL_MAX_RECIPIENTS} recipients per call.")
        return _storable(value)

    def validate_data(self, value):
        return _storable(value)


def _storable(value):
    # The JSON parser refuses such text first (apps/core/parsers.py); this holds for data from elsewhere.
    found = unstorable_find(value)
    if found:
        raise serializers.ValidationError({found[0] or "non_field_errors": [found[1]]})
    return value


SLUG = re.compile(r"^[-a-zA-Z0-9_]{1,100}$")


PRIORITIES = frozenset(Priority.values)


def trigger_input_fast(data) -> dict | None:
    """The common, well-formed trigger body, validated without DRF's per-field machinery.

    Conservative: it accepts only input that TriggerInputSerializer accepts and normalizes it the
    same way; for anything else it returns None and the serializer decides, with its error messages.
    The serializer costs about 0.4 ms per call under load; this path about a tenth of that.
    """
    # Text that cannot be stored never gets here: the JSON parser refuses it (apps/core/parsers.py).
    if not isinstance(data, dict) or not data.keys() <= {"workflow", "to", "data", "priority"}:
        return None
    workflow, to = data.get("workflow"), data.get("to")
    payload, priority = data.get("data", {}), data.get("priority", Priority.NORMAL)
    if not (isinstance(workflow, str) and SLUG.match(workflow)) or not isinstance(payload, dict):
        return None
    if priority not in PRIORITIES or not isinstance(to, list) or not 0 < len(to) <= settings.ROWBELL_MAX_RECIPIENTS:
        return None
    recipients = []
    for item in to:
        recipient, errors = recipient_clean(item)
        if errors:
            return None
        recipients.append(recipient)
    return {"workflow": workflow, "to": recipients, "data": payload, "priority": priority}


class TriggerOutputSerializer(serializers.Serializer):
    request_id = strict.UUIDField()
    status = strict.CharField()


class TriggerApi(APIView):
    # Revocation and expiry are checked inside trigger_create's single statement.
    authentication_classes = [DeferredLiveCheckAuthentication]
    permission_classes = [IsProductOrOrganization]
    throttle_classes = [TriggerRateThrottle]  # ROWBELL_TRIGGER_RATE, not ROWBELL_API_RATE

    @extend_schema(
        # A security requirement object, as drf-spectacular's own get_auth makes them: extend_schema's
        # annotation (a list of strings) does not say so.
        auth=cast(Any, [{"ApiKey": []}]),
        request=TriggerInputSerializer,
        responses={202: TriggerOutputSerializer},
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                required=False,
                description="Repeat-safe retries: the same key and body return the same "
                "request id; the same key with another body answers 409.",
            )
        ],
    )
    def post(self, request):
        key = request.headers.get("Idempotency-Key")
        if key is not None and not IDEMPOTENCY_KEY.match(key):
            raise InvalidInput("1 to 255 printable ASCII characters without spaces.", field="Idempotency-Key")
        v = trigger_input_fast(request.data)
        if v is None:
            data = TriggerInputSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            v = data.validated_data
        request_id, created = trigger_create(
            tenant=request.user,
            workflow=v["workflow"],
            recipients=v["to"],
            data=v["data"],
            priority=v["priority"],
            idempotency_key=key,
        )
        return Response(
            {"request_id": str(request_id), "status": "accepted" if created else "duplicate"},
            status=status.HTTP_202_ACCEPTED,
        )


class MaskedJSONField(serializers.JSONField):
    """A stored document shown with its sealed secrets masked (a recipient's `chat_webhook`)."""

    def to_representation(self, value):
        return super().to_representation(sealed_masked(value))


class RunSummarySerializer(serializers.Serializer):
    id = strict.IntegerField()
    recipient_index = strict.IntegerField()
    recipient = MaskedJSONField()
    status = strict.CharField()
    error = strict.CharField()
    completed_at = serializers.DateTimeField(allow_null=True)


class DeliverySummarySerializer(serializers.Serializer):
    id = strict.CharField(source="message_id")
    run_id = strict.IntegerField(allow_null=True)
    step = strict.CharField(source="step_id")
    channel = strict.CharField()
    recipient_id = strict.CharField()
    status = strict.CharField()
    attempts = strict.IntegerField(source="attempt_count")
    last_error = strict.CharField()
    created_at = serializers.DateTimeField()
    completed_at = serializers.DateTimeField(allow_null=True)


class RequestStatusSerializer(serializers.Serializer):
    request_id = strict.UUIDField()
    status = strict.ChoiceField(choices=["accepted", "processing", "completed", "failed", "partially_failed"])
    workflow = strict.CharField()
    version = strict.IntegerField()
    priority = strict.CharField()
    created_at = serializers.DateTimeField()
    runs = RunSummarySerializer(many=True)
    deliveries = DeliverySummarySerializer(many=True)


class RequestDetailApi(APIView):
    permission_classes = [IsProductOrOrganization]

    @extend_schema(responses=RequestStatusSerializer)
    def get(self, request, request_id):
        return Response(RequestStatusSerializer(request_status(tenant=request.user, request_id=request_id)).data)


class RunOutputSerializer(serializers.Serializer):
    id = strict.IntegerField()
    workflow = strict.CharField(source="workflow_version.workflow.key")
    version = strict.IntegerField(source="workflow_version.version")
    status = strict.CharField()
    request_id = strict.UUIDField(allow_null=True, help_text="The trigger request that started the run.")
    rerun_of = strict.IntegerField(source="rerun_of_id", allow_null=True)
    organization = strict.UUIDField(
        source="organization_id",
        allow_null=True,
        help_text="The organization the run belongs to: its key's, or the one its row named (a trigger's "
        "`organization`).",
    )
    waiting_on = strict.CharField(help_text="What a waiting run waits for: time, condition, retry, batch, delivery.")
    resume_at = serializers.DateTimeField(allow_null=True)
    event = serializers.SerializerMethodField(help_text="The database event that started the run.")
    recipient = MaskedJSONField(help_text="As given; a chat_webhook is shown masked.")
    step_index = strict.IntegerField(help_text="The next step to execute.")
    error = strict.CharField()
    created_at = serializers.DateTimeField()
    completed_at = serializers.DateTimeField(allow_null=True)

    @extend_schema_field(serializers.JSONField(allow_null=True))
    def get_event(self, run):
        # A database event, or a backfill's row: what a database trigger's run was started for.
        return run_event_summary(run) if trigger_source_get(run.source).definition_type == "database" else None


class RunStepSerializer(serializers.Serializer):
    step = strict.CharField(source="step_id")
    index = strict.IntegerField()
    type = strict.CharField()
    status = strict.CharField()
    output = serializers.JSONField()
    error = strict.CharField()
    finished_at = serializers.DateTimeField()


class RunDetailSerializer(RunOutputSerializer):
    steps = RunStepSerializer(many=True)
    deliveries = DeliverySummarySerializer(many=True)

    def to_representation(self, detail):
        data = super().to_representation(detail["run"])
        data["steps"] = RunStepSerializer(detail["steps"], many=True).data
        data["deliveries"] = DeliverySummarySerializer(detail["deliveries"], many=True).data
        return data


EVENT_ID = re.compile(r"^evt_(\d{1,18})$")


class RunListApi(APIView):
    pagination_class = NewestFirst
    permission_classes = [IsProductOrOrganization]

    class FilterSerializer(strict.QuerySerializer):
        workflow = strict.SlugField(required=False, max_length=100)
        status = strict.ChoiceField(required=False, choices=RunStatus.choices)
        event = strict.RegexField(
            EVENT_ID,
            required=False,
            help_text="A database event id: evt_<n>.",
            error_messages={"invalid": "An event id: evt_<n>."},
        )
        request_id = strict.UUIDField(required=False)

    @extend_schema(parameters=[FilterSerializer], responses=RunOutputSerializer(many=True))
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        f = dict(filters.validated_data)
        if "event" in f:
            f["event"] = int(EVENT_ID.match(f["event"]).group(1))
        return paginated(self, request, run_list(tenant=request.user, **f), RunOutputSerializer)


class RunDetailApi(APIView):
    permission_classes = [IsProductOrOrganization]

    @extend_schema(responses=RunDetailSerializer)
    def get(self, request, run_id):
        return Response(RunDetailSerializer(run_detail(tenant=request.user, run_id=run_id)).data)


class RunCancelApi(APIView):
    """Cancel a queued or waiting run (409 otherwise); its held or queued deliveries are discarded."""

    permission_classes = [IsProductOrOrganization]

    @extend_schema(request=None, responses=RunOutputSerializer)
    def post(self, request, run_id):
        run = run_cancel(run=run_get(tenant=request.user, run_id=run_id), actor=request.user.actor)
        return Response(RunOutputSerializer(run_get(tenant=request.user, run_id=run.id)).data)


class RerunInputSerializer(serializers.Serializer):
    start_from = strict.ChoiceField(
        choices=["failed_step", "start"],
        default="failed_step",
        help_text=("failed_step: keep what the steps before it produced; start: the whole workflow again."),
    )
    version = strict.ChoiceField(
        choices=list(RERUN_VERSIONS),
        default="original",
        help_text=(
            "original: the version the run ran (a published fix is not used); latest: the workflow's published "
            "version now, from the same step. The new run's `version` says which it executes."
        ),
    )


class RunRerunApi(APIView):
    """Run a failed or cancelled run again, as a new run linked to it (`rerun_of`): on the version it ran, or
    with `{"version": "latest"}` on the one published now. 409 when it cannot be re-run so (see the message)."""

    permission_classes = [IsProductOrOrganization]

    @extend_schema(request=RerunInputSerializer, responses={201: RunOutputSerializer})
    def post(self, request, run_id):
        data = RerunInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        new = run_rerun(
            run=run_get(tenant=request.user, run_id=run_id),
            from_start=data.validated_data["start_from"] == "start",
            on=data.validated_data["version"],
            actor=request.user.actor,
        )
        return Response(
            RunOutputSerializer(run_get(tenant=request.user, run_id=new.id)).data, status=status.HTTP_201_CREATED
        )


class BackfillSinceSerializer(KnownFieldsOnly, serializers.Serializer):
    column = strict.CharField(max_length=63, help_text="A column of the watched table, e.g. created_at.")
    after = strict.JSONField(help_text="Rows whose column is at least this value (in the column's type).")


class BackfillInputSerializer(KnownFieldsOnly, serializers.Serializer):
    where = strict.JSONField(
        required=False,
        help_text='A condition over the table\'s columns, as a classification\'s predicate: {"column": "paid", '
        '"op": "eq", "value": true}, with "and" / "or".',
    )
    since = BackfillSinceSerializer(required=False, help_text="A lower bound on one column.")
    after = strict.JSONField(required=False, help_text="`next` of the previous call: the page starts after it.")
    limit = strict.IntegerField(
        required=False, min_value=1, max_value=BACKFILL_MAX, default=BACKFILL_LIMIT, help_text="Rows of this call."
    )
    dry_run = strict.BooleanField(required=False, default=False, help_text="Say what would start; start nothing.")


class BackfillExampleSerializer(serializers.Serializer):
    row_key = serializers.JSONField()
    steps = serializers.JSONField(help_text="Each step rendered for this row, as the preview renders it.")
    held = strict.BooleanField(help_text="Whether its messages would be held for review.")
    organization = serializers.JSONField(
        required=False, help_text="The organization the row routes to, as preview says."
    )
    error = strict.CharField(required=False, help_text="Why its run would fail before its steps, escalated.")


class BackfillOutputSerializer(serializers.Serializer):
    dry_run = strict.BooleanField()
    rows = strict.IntegerField(help_text="Matching rows in this page.")
    next = serializers.JSONField(allow_null=True, help_text="Pass as `after` for the next page; null when done.")
    started = strict.IntegerField(required=False, help_text="Runs started (rows already backfilled start none).")
    matched = strict.IntegerField(required=False, help_text="Dry run: rows matching in all.")
    would_start = strict.IntegerField(required=False, help_text="Dry run: runs this call would start.")
    examples = BackfillExampleSerializer(many=True, required=False, help_text="Dry run: the first rows, rendered.")


class WorkflowBackfillApi(APIView):
    """Start runs of a database-triggered workflow's published version for rows that already exist, page by
    page, at low priority; `dry_run` says what it would start, with three rendered examples."""

    permission_classes = [IsProduct]
    parser_classes = [ExactJSONParser]  # keys and values of the customer's columns, with every digit

    @extend_schema(request=BackfillInputSerializer, responses=BackfillOutputSerializer)
    def post(self, request, key):
        workflow = workflow_get(tenant=request.user, key=key)
        body = BackfillInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        values = body.validated_data
        result = workflow_backfill(
            workflow=workflow,
            where=values.get("where"),
            since=values.get("since"),
            after=values.get("after"),
            limit=values["limit"],
            dry_run=values["dry_run"],
            actor=request.user.actor,
        )
        return Response(result, status=status.HTTP_200_OK if values["dry_run"] else status.HTTP_202_ACCEPTED)
