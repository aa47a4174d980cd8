from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "apps.workflows"
    label = "workflows"

    def ready(self):
        from apps.connections.consumers import capture_users

        from .services import workflow_capture_uses

        capture_users.register(workflow_capture_uses)
