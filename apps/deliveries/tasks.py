"""Celery tasks: thin doors that carry ids into the services. The database says what is true."""

from celery import shared_task


@shared_task(name="apps.deliveries.tasks.deliveries_send")
def deliveries_send_task(delivery_ids: list[int]) -> int:
    from .services import deliveries_send

    return deliveries_send(delivery_ids=delivery_ids)


@shared_task(name="apps.deliveries.tasks.deliveries_dispatch_due")
def deliveries_dispatch_due_task() -> int:
    from .services import deliveries_dispatch_due

    return deliveries_dispatch_due()
