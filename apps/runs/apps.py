from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "apps.runs"
    label = "runs"

    def ready(self):
        from apps.connections.consumers import event_consumers
        from apps.deliveries.hooks import deliveries_settled
        from apps.workflows.hooks import runs_cancel

        from .engine import runs_cancel_for_workflow, runs_deliveries_settled
        from .triggers import api, backfill, database  # noqa: F401 (each registers its trigger source)
        from .triggers.database import runs_for_events

        event_consumers.register(runs_for_events)
        deliveries_settled.register(runs_deliveries_settled)
        runs_cancel.register(runs_cancel_for_workflow)
