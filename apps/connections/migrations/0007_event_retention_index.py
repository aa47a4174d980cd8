"""Indexes retention reads (apps.runs.retention), built concurrently: writes go on while they are built."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('connections', '0006_event_ids_exact_numbers'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='event',
            index=models.Index(fields=['connection', 'recorded_at'], name='event_connection_recorded'),
        ),
    ]
