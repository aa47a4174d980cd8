"""The staff groups: read-only operators, reviewers (release and discard held deliveries) and operators."""

from django.db import migrations

OUR_APPS = ("tenants", "connections", "workflows", "runs", "deliveries", "audit")
REVIEW = ("deliveries", "review_delivery")
GROUPS = {
    "Rowbell read-only operators": (),
    "Rowbell reviewers": (REVIEW,),
    "Rowbell operators": (REVIEW, ("runs", "operate_run"), ("connections", "operate_connection"),
                          ("workflows", "publish_workflow"), ("deliveries", "operate_webhookendpoint")),
}


def create_groups(apps, schema_editor):
    from django.contrib.auth.management import create_permissions
    from django.db.models import Q

    # Permissions are otherwise created after the last migration: make them exist now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, extra in GROUPS.items():
        wanted = Q(content_type__app_label__in=OUR_APPS, codename__startswith="view_")
        for app_label, codename in extra:
            wanted |= Q(content_type__app_label=app_label, codename=codename)
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.add(*Permission.objects.filter(wanted))


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=list(GROUPS)).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("audit", "0003_indexes_lean"),
        ("tenants", "0002_sandbox_and_escalation"),
        ("connections", "0003_connection_health"),
        ("workflows", "0003_operator_permissions"),
        ("runs", "0005_escalation_decision"),
        ("deliveries", "0008_operator_permissions"),
    ]

    operations = [migrations.RunPython(create_groups, remove_groups)]
