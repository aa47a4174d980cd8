from django.urls import path

from . import apis

urlpatterns = [
    path("connections", apis.ConnectionListCreateApi.as_view(), name="connection-list"),
    path("connections/<uuid:connection_id>", apis.ConnectionDetailApi.as_view(), name="connection-detail"),
    path("connections/<uuid:connection_id>/check", apis.ConnectionCheckApi.as_view(), name="connection-check"),
    path("connections/<uuid:connection_id>/tables", apis.ConnectionTablesApi.as_view(), name="connection-tables"),
    path("connections/<uuid:connection_id>/health", apis.ConnectionHealthApi.as_view(), name="connection-health"),
]
