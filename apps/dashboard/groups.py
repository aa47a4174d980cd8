"""The staff groups, and what each may do in the admin.

- read-only operators see everything (what a secret is never shown) and change nothing;
- reviewers also release and discard held sandbox deliveries;
- operators also re-run, cancel and dismiss runs, check and repair connections, publish and unpublish
  workflows, and disable, enable, rotate and replay webhook endpoints.

Superusers may do everything. The groups are created by a migration and kept whole (by name, adding
what new models bring) after every `migrate`.
"""

from __future__ import annotations

READ_ONLY = "Rowbell read-only operators"
REVIEWERS = "Rowbell reviewers"
OPERATORS = "Rowbell operators"

OUR_APPS = ("tenants", "connections", "workflows", "runs", "deliveries", "audit", "core")

REVIEW = ("deliveries", "review_delivery")
OPERATE = (
    ("runs", "operate_run"),
    ("connections", "operate_connection"),
    ("workflows", "publish_workflow"),
    ("deliveries", "operate_webhookendpoint"),
)

# Beside viewing every model of OUR_APPS.
GROUPS: dict[str, tuple[tuple[str, str], ...]] = {
    READ_ONLY: (),
    REVIEWERS: (REVIEW,),
    OPERATORS: (REVIEW, *OPERATE),
}


def staff_groups_sync(apps=None, using: str = "default") -> list[str]:
    """Create the staff groups that are missing and add the permissions they lack (never removing one an
    administrator added); return their names. `apps` is a migration's app registry."""
    from django.apps import apps as live_apps
    from django.db.models import Q

    apps = apps or live_apps
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    view = Q(content_type__app_label__in=OUR_APPS, codename__startswith="view_")
    for name, extra in GROUPS.items():
        wanted = view
        for app_label, codename in extra:
            wanted |= Q(content_type__app_label=app_label, codename=codename)
        group, _ = Group.objects.using(using).get_or_create(name=name)
        group.permissions.add(*Permission.objects.using(using).filter(wanted))
    return list(GROUPS)


def staff_groups_sync_after_migrate(sender, apps=None, using="default", plan=None, **kwargs) -> None:
    """After `migrate` (and a test flush): the groups exist and know every model's view permission. Not
    when migrating backwards, nor before the groups' own migration has run."""
    if plan and all(backwards for _, backwards in plan):
        return
    if apps is None:  # a flush sends no registry: the models are the live ones
        from django.apps import apps as live_apps

        apps = live_apps
    try:
        apps.get_model("auth", "Group")
    except LookupError:  # e.g. `migrate contenttypes` alone on a new database
        return
    from django.db import connections
    from django.db.migrations.recorder import MigrationRecorder

    if (
        not MigrationRecorder(connections[using])
        .migration_qs.filter(app="dashboard", name="0001_staff_groups")
        .exists()
    ):
        return
    staff_groups_sync(apps, using)
