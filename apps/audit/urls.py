from django.urls import path

from .apis import AuditListApi

urlpatterns = [path("audit", AuditListApi.as_view(), name="audit-list")]
