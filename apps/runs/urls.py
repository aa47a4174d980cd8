from django.urls import path

from . import apis

urlpatterns = [
    path("trigger", apis.TriggerApi.as_view(), name="trigger"),
    path("requests/<uuid:request_id>", apis.RequestDetailApi.as_view(), name="request-detail"),
]
