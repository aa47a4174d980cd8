from django.urls import path

from . import apis

urlpatterns = [
    path("workflows", apis.WorkflowListCreateApi.as_view(), name="workflow-list"),
    path("workflows/schema.json", apis.WorkflowSchemaApi.as_view(), name="workflow-schema"),
    path("workflows/<slug:key>", apis.WorkflowDetailApi.as_view(), name="workflow-detail"),
    path("workflows/<slug:key>/publish", apis.WorkflowPublishApi.as_view(), name="workflow-publish"),
    path("workflows/<slug:key>/unpublish", apis.WorkflowUnpublishApi.as_view(), name="workflow-unpublish"),
    path("workflows/<slug:key>/preview", apis.WorkflowPreviewApi.as_view(), name="workflow-preview"),
    path("workflows/<slug:key>/versions", apis.WorkflowVersionListApi.as_view(), name="workflow-versions"),
]
