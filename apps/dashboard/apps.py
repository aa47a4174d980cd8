from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps
from django.db.models.signals import post_migrate


class DashboardConfig(AppConfig):
    """The operators' console: Rowbell's admin site, its home dashboard, the review queue and the staff
    groups."""

    default = True
    name = "apps.dashboard"
    label = "dashboard"

    def ready(self):
        from .groups import staff_groups_sync_after_migrate

        # A test flush empties the groups the migration created; keep them whole after every migrate.
        post_migrate.connect(staff_groups_sync_after_migrate, sender=self)


class RowbellAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with Rowbell's site as the default one, so every `@admin.register` lands there."""

    default = False
    default_site = "apps.dashboard.site.RowbellAdminSite"
