from django.urls import path

from . import apis

urlpatterns = [
    path("webhooks/<uuid:endpoint_id>", apis.WebhookDetailApi.as_view(), name="webhook-detail"),
    path("webhooks/<uuid:endpoint_id>/disable", apis.WebhookDisableApi.as_view(), name="webhook-disable"),
    path("webhooks/<uuid:endpoint_id>/enable", apis.WebhookEnableApi.as_view(), name="webhook-enable"),
    path(
        "webhooks/<uuid:endpoint_id>/rotate-secret", apis.WebhookRotateSecretApi.as_view(), name="webhook-rotate-secret"
    ),
    path("webhooks/<uuid:endpoint_id>/replay", apis.WebhookReplayApi.as_view(), name="webhook-replay"),
    path("metrics", apis.MetricsApi.as_view(), name="metrics"),
    path("providers", apis.ProviderListApi.as_view(), name="provider-list"),
    path("providers/<slug:channel>", apis.ProviderDetailApi.as_view(), name="provider-detail"),
    path(
        "providers/<slug:channel>/rotate-events-secret",
        apis.ProviderRotateEventsSecretApi.as_view(),
        name="provider-rotate-events-secret",
    ),
    path("deliveries", apis.DeliveryListApi.as_view(), name="delivery-list"),
    path("deliveries/replay", apis.DeliveryReplayApi.as_view(), name="delivery-replay"),
    path("deliveries/release", apis.DeliveryReleaseApi.as_view(), name="delivery-release"),
    path("deliveries/discard", apis.DeliveryDiscardApi.as_view(), name="delivery-discard"),
    # After the fixed paths above, which it would otherwise shadow.
    path("deliveries/<str:message_id>", apis.DeliveryDetailApi.as_view(), name="delivery-detail"),
]
