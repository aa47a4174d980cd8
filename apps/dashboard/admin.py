"""Third-party models kept out of the operators' way.

- djangorestframework-api-key's own APIKey model is unused: Rowbell's keys are `tenants.ApiKey` (a product's or
  an organization's, created through the API and shown once; listed under "API keys", where they are revoked).
  Its stock admin would offer an "Add" that makes a key belonging to nobody: it is not registered.
- django-celery-beat's schedule (periodic tasks, intervals, crontabs, solar and clocked schedules) is what the
  `beat` process reads (the DatabaseScheduler). Rowbell writes its own tasks there by name after every `migrate`
  (apps.core.schedules), so nobody needs to edit them. Their pages are left out of the home page and the
  sidebar for everyone, but stay at /admin/django_celery_beat/periodictask/ for a superuser who must pause a
  tick during an incident or add a task of their own (both survive deploys). The staff groups hold no
  permission on them.

Imported last of the admin modules (apps.dashboard comes last in INSTALLED_APPS); the packages' admin modules
are imported here first all the same, so that what they register exists to be changed.
"""

from django.contrib import admin
from django_celery_beat import admin as beat_admin  # noqa: F401  (registers the schedule's pages)
from django_celery_beat.models import ClockedSchedule, CrontabSchedule, IntervalSchedule, PeriodicTask, SolarSchedule
from rest_framework_api_key import admin as api_key_admin  # noqa: F401  (registers the stock key page)
from rest_framework_api_key.models import APIKey

BEAT_SCHEDULE = (PeriodicTask, IntervalSchedule, CrontabSchedule, SolarSchedule, ClockedSchedule)


class Unlisted:
    """A model admin that is on no list: not on the home page, not in the sidebar. Its pages answer whoever
    holds the model's permissions."""

    def has_module_permission(self, request):
        return False


def unlisted(model) -> None:
    """Register `model` again with its current admin class, unlisted."""
    current = type(admin.site.get_model_admin(model))
    admin.site.unregister(model)
    admin.site.register(model, type(f"Unlisted{current.__name__}", (Unlisted, current), {}))


if admin.site.is_registered(APIKey):
    admin.site.unregister(APIKey)
for _model in BEAT_SCHEDULE:
    if admin.site.is_registered(_model):
        unlisted(_model)
