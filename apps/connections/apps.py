from django.apps import AppConfig


class ConnectionsConfig(AppConfig):
    """Customer database connections, trigger installation and event pick-up (the capture path)."""

    name = "apps.connections"
    label = "connections"
