import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("rowbell")
# Every Celery setting lives in Django settings under the CELERY_ prefix.
app.config_from_object("django.conf:settings", namespace="CELERY")
# One queue per priority; workers consume them in this order (see CELERY_BROKER_TRANSPORT_OPTIONS).
app.conf.task_queues = [Queue(name) for name in ("high", "normal", "low")]
app.autodiscover_tasks()
