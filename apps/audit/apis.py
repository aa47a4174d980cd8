from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.views import APIView

from apps.core import fields as strict
from apps.core.pagination import NewestFirst, paginated
from apps.core.permissions import IsProductOrOrganization

from .selectors import audit_list


class AuditListApi(APIView):
    pagination_class = NewestFirst
    permission_classes = [IsProductOrOrganization]

    class FilterSerializer(strict.QuerySerializer):
        action = strict.CharField(required=False, max_length=80, help_text="Exact action, or a prefix ending in '.'")
        target_id = strict.CharField(required=False, max_length=64)

    class OutputSerializer(serializers.Serializer):
        id = strict.IntegerField()
        created_at = serializers.DateTimeField()
        actor = strict.CharField()
        action = strict.CharField()
        target_type = strict.CharField()
        target_id = strict.CharField()
        organization_id = strict.UUIDField(allow_null=True)
        data = serializers.JSONField()

    @extend_schema(parameters=[FilterSerializer], responses=OutputSerializer(many=True))
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        qs = audit_list(tenant=request.user, **filters.validated_data)
        return paginated(self, request, qs, self.OutputSerializer)
