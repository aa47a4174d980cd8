from django.apps import AppConfig


class DeliveriesConfig(AppConfig):
    name = "apps.deliveries"
    label = "deliveries"

    def ready(self):
        from anymail.signals import tracking

        from .tracking import provider_event

        tracking.connect(provider_event, dispatch_uid="rowbell-provider-events")
