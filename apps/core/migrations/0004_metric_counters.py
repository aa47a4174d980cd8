"""Prometheus counters kept in the database, one row per series and process shard."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('core', '0003_queued_action_exact_numbers'),
    ]

    operations = [
        migrations.CreateModel(
            name='MetricCounter',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=100)),
                ('labels', models.CharField(blank=True, default='', max_length=500)),
                ('shard', models.SmallIntegerField(default=0)),
                ('value', models.FloatField(default=0)),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('name', 'labels', 'shard'), name='metric_series_shard')],
            },
        ),
    ]
