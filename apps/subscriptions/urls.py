from django.urls import path

from . import apis

urlpatterns = [
    path("webhooks", apis.WebhookListCreateApi.as_view(), name="webhook-list"),
]
