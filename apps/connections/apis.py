import psycopg
from drf_spectacular.utils import extend_schema
from psycopg.conninfo import conninfo_to_dict
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.tenants.permissions import IsProduct

from .introspection import connection_tables
from .pickup import connection_health
from .models import SslMode
from .selectors import connection_get, connection_list
from .services import (CustomerDatabaseUnavailable, connection_create, connection_delete, connection_drift,
                       connection_recheck)

_FROM_DSN = {"host": "host", "port": "port", "dbname": "database", "user": "user", "password": "password",
             "sslmode": "sslmode"}


class ConnectionInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    dsn = serializers.CharField(required=False, write_only=True, max_length=2000,
                                help_text="postgresql://user:password@host:port/database?sslmode=require, "
                                          "instead of the separate fields.")
    host = serializers.CharField(required=False, max_length=255)
    port = serializers.IntegerField(required=False, default=5432, min_value=1, max_value=65535)
    database = serializers.CharField(required=False, max_length=63)
    user = serializers.CharField(required=False, max_length=63)
    password = serializers.CharField(required=False, allow_blank=True, default="", write_only=True,
                                     trim_whitespace=False, max_length=1000)
    sslmode = serializers.ChoiceField(choices=SslMode.choices, required=False, default=SslMode.PREFER)
    schema = serializers.CharField(required=False, default="rowbell", max_length=63)
    tables = serializers.ListField(child=serializers.CharField(max_length=127), required=False, default=list,
                                   max_length=200, help_text="Tables to check SELECT and TRIGGER privileges on.")

    def validate(self, data):
        dsn = data.pop("dsn", None)
        if dsn:
            if any(k in self.initial_data for k in ("host", "database", "user", "password")):
                raise serializers.ValidationError({"dsn": ["Give either a dsn or host/database/user, not both."]})
            try:
                parsed = conninfo_to_dict(dsn)
            except psycopg.ProgrammingError as exc:
                raise serializers.ValidationError({"dsn": [f"Not a valid connection string: {exc}"]}) from None
            for key, field in _FROM_DSN.items():
                if parsed.get(key) not in (None, ""):
                    data[field] = parsed[key]
            try:
                data["port"] = int(data.get("port", 5432))
            except ValueError:
                raise serializers.ValidationError({"dsn": ["The port must be a number."]}) from None
            if data["sslmode"] not in SslMode.values:
                raise serializers.ValidationError({"dsn": [f"Unknown sslmode '{data['sslmode']}'."]})
        missing = {f: ["This field is required (or give a dsn)."] for f in ("host", "database", "user")
                   if not data.get(f)}
        if missing:
            raise serializers.ValidationError(missing)
        return data


class CheckSerializer(serializers.Serializer):
    name = serializers.CharField()
    ok = serializers.BooleanField()
    detail = serializers.CharField()


class ConnectionOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    host = serializers.CharField()
    port = serializers.IntegerField()
    database = serializers.CharField()
    user = serializers.CharField()
    sslmode = serializers.CharField()
    schema = serializers.CharField()
    created_at = serializers.DateTimeField()


class ConnectionCheckedSerializer(ConnectionOutputSerializer):
    checks = CheckSerializer(many=True)


class CheckInputSerializer(serializers.Serializer):
    tables = serializers.ListField(child=serializers.CharField(max_length=127), required=False, default=list,
                                   max_length=200)


class CheckOutputSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    checks = CheckSerializer(many=True)


class ColumnSerializer(serializers.Serializer):
    name = serializers.CharField()
    type = serializers.CharField()
    nullable = serializers.BooleanField()


class TableSerializer(serializers.Serializer):
    schema = serializers.CharField()
    name = serializers.CharField()
    columns = ColumnSerializer(many=True)
    primary_key = serializers.ListField(child=serializers.CharField())


class ConnectionListCreateApi(APIView):
    permission_classes = [IsProduct]

    @extend_schema(responses=ConnectionOutputSerializer(many=True))
    def get(self, request):
        return Response(ConnectionOutputSerializer(connection_list(tenant=request.user), many=True).data)

    @extend_schema(request=ConnectionInputSerializer, responses={201: ConnectionCheckedSerializer})
    def post(self, request):
        data = ConnectionInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        connection, checks = connection_create(product=request.user.product, actor=request.user.actor,
                                               **data.validated_data)
        body = ConnectionOutputSerializer(connection).data | {"checks": [c.as_dict() for c in checks]}
        return Response(body, status=status.HTTP_201_CREATED)


class ConnectionDetailApi(APIView):
    permission_classes = [IsProduct]

    @extend_schema(responses=ConnectionOutputSerializer)
    def get(self, request, connection_id):
        return Response(ConnectionOutputSerializer(connection_get(tenant=request.user,
                                                                  connection_id=connection_id)).data)

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
    capture = serializers.CharField()
    table = serializers.CharField()
    kind = serializers.CharField(help_text="missing_table, missing_column, type_changed, missing_trigger, "
                                           "trigger_error or install_failed.")
    detail = serializers.CharField()
    repairable = serializers.BooleanField(help_text="A repair (installing again) fixes it; otherwise correct "
                                                    "the source first.")
    workflows = serializers.ListField(child=serializers.CharField())
    endpoints = serializers.ListField(child=serializers.CharField())


class HeldBackBySerializer(serializers.Serializer):
    pid = serializers.IntegerField(allow_null=True, help_text="Null for a prepared (two-phase) transaction.")
    user = serializers.CharField(allow_null=True)
    application_name = serializers.CharField(allow_null=True, allow_blank=True)
    state = serializers.CharField(allow_null=True)
    xact_start = serializers.DateTimeField(allow_null=True)
    seconds_open = serializers.FloatField(allow_null=True)


class HealthSerializer(serializers.Serializer):
    capture_installed = serializers.BooleanField()
    reachable = serializers.BooleanField(allow_null=True)
    backlog = serializers.IntegerField(allow_null=True, help_text="Events written but not read yet.")
    oldest_unread_age_seconds = serializers.FloatField(allow_null=True)
    held_back_by = HeldBackBySerializer(
        many=True, allow_null=True,
        help_text="Open transactions that wrote to the event log: their events are read when they commit. "
                  "state, xact_start and seconds_open are null for another role's session unless Rowbell's "
                  "database user has pg_read_all_stats.")
    last_poll_at = serializers.DateTimeField(allow_null=True)
    last_error = serializers.CharField(allow_blank=True)
    last_error_at = serializers.DateTimeField(allow_null=True)
    capture_problems = ProblemSerializer(many=True, help_text="Drift between the captures and the database "
                                                              "(see the README): empty when all is in order.")


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
