from django.urls import path

from . import apis

urlpatterns = [
    path("trigger", apis.TriggerApi.as_view(), name="trigger"),
    path("requests/<uuid:request_id>", apis.RequestDetailApi.as_view(), name="request-detail"),
    path("runs", apis.RunListApi.as_view(), name="run-list"),
    path("runs/<int:run_id>", apis.RunDetailApi.as_view(), name="run-detail"),
    path("runs/<int:run_id>/cancel", apis.RunCancelApi.as_view(), name="run-cancel"),
    path("runs/<int:run_id>/rerun", apis.RunRerunApi.as_view(), name="run-rerun"),
    path("workflows/<slug:key>/backfill", apis.WorkflowBackfillApi.as_view(), name="workflow-backfill"),
]
