"""Retry schedules on deliveries and webhook endpoints, and the count of an endpoint's failed attempts (its
auto-disable needs both a span and a count). Nullable columns and a constant default: no table rewrite."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('deliveries', '0011_secret_urls_encrypted'),
    ]

    operations = [
        migrations.AddField(
            model_name='delivery',
            name='retry_schedule',
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='webhookendpoint',
            name='failed_attempts',
            field=models.PositiveIntegerField(db_default=0, default=0),
        ),
        migrations.AddField(
            model_name='webhookendpoint',
            name='retry_schedule',
            field=models.JSONField(blank=True, null=True),
        ),
    ]
