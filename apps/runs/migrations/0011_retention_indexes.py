"""Indexes retention reads (apps.runs.retention), built concurrently: writes go on while they are built."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('connections', '0007_event_retention_index'),
        ('runs', '0010_run_source_cause'),
        ('tenants', '0005_product_retention_days'),
        ('workflows', '0005_retry_defaults_not_stored'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='run',
            index=models.Index(fields=['product', 'created_at'], name='run_product_created'),
        ),
        AddIndexConcurrently(
            model_name='triggerrequest',
            index=models.Index(fields=['product', 'created_at'], name='request_product_created'),
        ),
    ]
