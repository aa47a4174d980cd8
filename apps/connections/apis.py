import psycopg
from drf_spectacular.utils import extend_schema
from psycopg.conninfo import conninfo_to_dict
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core import fields as strict
from apps.core.permissions import IsProduct

from .introspection import connection_tables
from .models import SslMode
from .pickup import connection_health
from .selectors import connection_get, connection_list
from .services import (
    CustomerDatabaseUnavailable,
    connection_create,
    connection_delete,
    connection_drift,
    connection_recheck,
)

_FROM_DSN = {
    "host": "host",
    "port": "port",
    "dbname": "database",
    "user": "user",
    "password": "password",
    "sslmode": "sslmode",
}


class ConnectionInputSerializer(serializers.Serializer):
    name = strict.CharField(max_length=200)
    dsn = strict.CharField(
        required=False,
        write_only=True,
        max_length=2000,
        help_text="postgresql://user:password@host:port/database?sslmode=require, instead of the separate fields.",
    )
    host = strict.CharField(required=False, max_length=255)
    port = strict.IntegerField(required=False, default=5432, min_value=1, max_value=65535)
    database = strict.CharField(required=False, max_length=63)
    user = strict.CharField(required=False, max_length=63)
    password = strict.CharField(
        required=False, allow_blank=True, default="", write_only=True, trim_whitespace=False, max_length=1000
    )
    sslmode = strict.ChoiceField(choices=SslMode.choices, required=False, default=SslMode.PREFER)
    schema = strict.CharField(required=False, default="rowbell", max_length=63)
    tables = serializers.ListField(
        child=strict.CharField(max_length=127),
        required=False,
        default=list,
        max_length=200,
        help_text="Tables to check SELECT and TRIGGER privileges on.",
    )

    def validate(self, data):
        dsn = data.pop("dsn", None)
        if dsn:
            if any(k in self.initial_data for k in ("host", "database", "user", "password")):
                raise serializers.ValidationError({"dsn": ["Give either a dsn or host/database/user, not both."]})
            try:
                parsed = conninfo_to_dict(dsn)
            except psycopg.ProgrammingError as exc:
                reason = str(exc).strip()
                raise serializers.ValidationError({"dsn": [f"Not a valid connection string: {reason}"]}) from None
            except UnicodeDecodeError:
                # libpq decodes %XX escapes to bytes; a value that is not UTF-8 cannot name anything.
                raise serializers.ValidationError(
                    {"dsn": ["Not a valid connection string: a %-escaped value is not UTF-8 text."]}
                ) from None
            for key, field in _FROM_DSN.items():
                if parsed.get(key) not in (None, ""):
                    # The same rules as the separate fields (length, NUL characters, port range, sslmode).
                    value = parsed[key]
                    if field == "port":
                        try:
                            value = int(value)
                        except ValueError:
                            raise serializers.ValidationError({"dsn": ["The port must be a number."]}) from None
                    try:
                        data[field] = self.fields[field].run_validation(value)
                    except serializers.ValidationError as exc:
                        reasons = exc.detail if isinstance(exc.detail, list) else [exc.detail]
                        raise serializers.ValidationError(
                            {"dsn": [f"The connection string's {key}: {reason}" for reason in reasons]}
                        ) from None
        missing = {
            f: ["This field is required (or give a dsn)."] for f in ("host", "database", "user") if not data.get(f)
        }
        if missing:
            raise serializers.ValidationError(missing)
        return data


class CheckSerializer(serializers.Serializer):
    name = strict.CharField()
    ok = strict.BooleanField()
    detail = strict.CharField()


class ConnectionOutputSerializer(serializers.Serializer):
    id = strict.UUIDField()
    name = strict.CharField()
    host = strict.CharField()
    port = strict.IntegerField()
    database = strict.CharField()
    user = strict.CharField()
    sslmode = strict.CharField()
    schema = strict.CharField()
    created_at = serializers.DateTimeField()


class ConnectionCheckedSerializer(ConnectionOutputSerializer):
    checks = CheckSerializer(many=True)


class CheckInputSerializer(serializers.Serializer):
    tables = serializers.ListField(child=strict.CharField(max_length=127), required=False, default=list, max_length=200)


class CheckOutputSerializer(serializers.Serializer):
    ok = strict.BooleanField()
    checks = CheckSerializer(many=True)


class ColumnSerializer(serializers.Serializer):
    name = strict.CharField()
    type = strict.CharField()
    nullable = strict.BooleanField()


class TableSerializer(serializers.Serializer):
    schema = strict.CharField()
    name = strict.CharField()
    columns = ColumnSerializer(many=True)
    primary_key = serializers.ListField(child=strict.CharField())


class ConnectionListCreateApi(APIView):
    permission_classes = [IsProduct]

    @extend_schema(responses=ConnectionOutputSerializer(many=True))
    def get(self, request):
        return Response(ConnectionOutputSerializer(connection_list(tenant=request.user), many=True).data)

    @extend_schema(request=ConnectionInputSerializer, responses={201: ConnectionCheckedSerializer})
    def post(self, request):
        data = ConnectionInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        connection, checks = connection_create(
            product=request.user.product, actor=request.user.actor, **data.validated_data
        )
        body = ConnectionOutputSerializer(connection).data | {"checks": [c.as_dict() for c in checks]}
        return Response(body, status=status.HTTP_201_CREATED)


class ConnectionDetailApi(APIView):
    permission_classes = [IsProduct]

    @extend_schema(responses=ConnectionOutputSerializer)
    def get(self, request, connection_id):
        return Response(
            ConnectionOutputSerializer(connection_get(tenant=request.user, connection_id=connection_id)).data
        )

    @extend_schema(responses={204: None})
    def delete(self, request, connection_id):
        """Retire the connection's triggers and delete it; 409 naming what still uses it."""
        connection = connection_get(tenant=request.user, connection_id=connection_id)
        connection_delete(connection=connection, actor=request.user.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ConnectionCheckApi(APIView):
    permission_classes = [IsProduct]

    @extend_schema(request=CheckInputSerializer, responses=CheckOutputSerializer)
    def post(self, request, connection_id):
        connection = connection_get(tenant=request.user, connection_id=connection_id)
        data = CheckInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        checks = connection_recheck(connection=connection, actor=request.user.actor, **data.validated_data)
        return Response({"ok": all(c.ok for c in checks), "checks": [c.as_dict() for c in checks]})


class ConnectionTablesApi(APIView):
    permission_classes = [IsProduct]

    @extend_schema(responses=TableSerializer(many=True))
    def get(self, request, connection_id):
        connection = connection_get(tenant=request.user, connection_id=connection_id)
        try:
            tables = connection_tables(connection=connection)
        except psycopg.OperationalError as exc:
            raise CustomerDatabaseUnavailable.from_error(exc) from exc
        return Response(TableSerializer(tables, many=True).data)


class ProblemSerializer(serializers.Serializer):
    capture = strict.CharField()
    table = strict.CharField()
    kind = strict.CharField(
        help_text="missing_table, missing_column, type_changed, missing_trigger, trigger_error or install_failed."
    )
    detail = strict.CharField()
    repairable = strict.BooleanField(
        help_text="A repair (installing again) fixes it; otherwise correct the source first."
    )
    workflows = serializers.ListField(child=strict.CharField())
    endpoints = serializers.ListField(child=strict.CharField())


class HeldBackBySerializer(serializers.Serializer):
    pid = strict.IntegerField(allow_null=True, help_text="Null for a prepared (two-phase) transaction.")
    user = strict.CharField(allow_null=True)
    application_name = strict.CharField(allow_null=True, allow_blank=True)
    state = strict.CharField(allow_null=True)
    xact_start = serializers.DateTimeField(allow_null=True)
    seconds_open = strict.FloatField(allow_null=True)


class HealthSerializer(serializers.Serializer):
    capture_installed = strict.BooleanField()
    reachable = strict.BooleanField(allow_null=True)
    backlog = strict.IntegerField(allow_null=True, help_text="Events written but not read yet.")
    oldest_unread_age_seconds = strict.FloatField(allow_null=True)
    held_back_by = HeldBackBySerializer(
        many=True,
        allow_null=True,
        help_text="Open transactions that wrote to the event log: their events are read when they commit. "
        "state, xact_start and seconds_open are null for another role's session unless Rowbell's "
        "database user has pg_read_all_stats.",
    )
    last_poll_at = serializers.DateTimeField(allow_null=True)
    last_error = strict.CharField(allow_blank=True)
    last_error_at = serializers.DateTimeField(allow_null=True)
    capture_problems = ProblemSerializer(
        many=True, help_text="Drift between the captures and the database (see the README): empty when all is in order."
    )


class ConnectionHealthApi(APIView):
    permission_classes = [IsProduct]

    @extend_schema(responses=HealthSerializer)
    def get(self, request, connection_id):
        connection = connection_get(tenant=request.user, connection_id=connection_id)
        health = connection_health(connection=connection)
        try:
            health["capture_problems"] = connection_drift(connection=connection)
        except psycopg.Error:  # unreachable: what the last health tick found
            health["capture_problems"] = connection.capture_problems or []
        return Response(HealthSerializer(health).data)
