"""A product may keep its finished work for its own number of days (apps.runs.retention)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('tenants', '0004_organization_sandbox'),
    ]

    operations = [
        migrations.AddField(
            model_name='product',
            name='retention_days',
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
    ]
