import os

from celery import Celery
from celery.signals import task_postrun
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("rowbell")
# Every Celery setting lives in Django settings under the CELERY_ prefix.
app.config_from_object("django.conf:settings", namespace="CELERY")
# One queue per priority; workers consume them in this order (see CELERY_BROKER_TRANSPORT_OPTIONS).
app.conf.task_queues = [Queue(name) for name in ("high", "normal", "low")]
app.autodiscover_tasks()


@task_postrun.connect
def database_connections_tidy(**kwargs):
    """Keep the worker's database connection between tasks (CELERY_DB_REUSE_MAX), but not one that an
    error left unusable or that outlived CONN_MAX_AGE: Django's request-end rule, applied per task."""
    from django.db import close_old_connections

    close_old_connections()
