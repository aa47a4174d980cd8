"""Definitions stored the service's retry defaults as if chosen (8 attempts, 10 s or 2 s back-off, 6 h cap): a
policy that is exactly one of those is removed, so that the workflow follows the channels' retry schedules
(apps.deliveries.backoff), which outlast an outage. A policy that differs in anything was chosen and stays."""

from django.db import migrations

_DEFAULTS = [
    '{"max_attempts": 8, "backoff": 10.0, "max_backoff": 21600.0}',
    '{"max_attempts": 8, "backoff": 2.0, "max_backoff": 21600.0}',
]

_CLEAR = """
UPDATE {table}
SET {column} = jsonb_set({column}::jsonb, '{{retry}}', '{{}}'::jsonb)
WHERE {column}::jsonb -> 'retry' = ANY(ARRAY[{defaults}]::jsonb[])
"""


class Migration(migrations.Migration):
    dependencies = [("workflows", "0004_database_triggers_for_each_statement")]

    operations = [
        migrations.RunSQL(
            [
                _CLEAR.format(
                    table=table, column=column, defaults=", ".join(f"'{d}'" for d in _DEFAULTS)
                )
                for table, column in (("workflows_workflowversion", "definition"), ("workflows_workflow", "draft"))
            ],
            reverse_sql=migrations.RunSQL.noop,
        )
    ]
