from django.apps import AppConfig


class SubscriptionsConfig(AppConfig):
    """Row-event webhook subscriptions: a webhook endpoint with a source in a connected database.

    It sits on connections (captures, events) and deliveries (endpoints, sending): it fills their
    registries here, so neither imports it.
    """

    name = "apps.subscriptions"
    label = "subscriptions"

    def ready(self):
        from apps.connections import consumers
        from apps.deliveries import hooks

        from . import services

        consumers.event_consumers.register(services.row_event_deliveries_create)
        consumers.capture_users.register(services.subscription_capture_uses)
        hooks.endpoint_enabled.register(services.subscription_capture_restore)
        hooks.endpoints_disabled.register(services.subscription_captures_retire)
