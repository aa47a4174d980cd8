"""Indexes retention reads (apps.runs.retention), built concurrently: writes go on while they are built."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('connections', '0007_event_retention_index'),
        ('deliveries', '0012_retry_schedules'),
        ('runs', '0010_run_source_cause'),
        ('tenants', '0005_product_retention_days'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='delivery',
            index=models.Index(condition=models.Q(('event__isnull', False)), fields=['event'], name='delivery_event'),
        ),
    ]
