from django.urls import path

from . import apis

urlpatterns = [path("workflows/generate", apis.WorkflowGenerateApi.as_view(), name="workflow-generate")]
