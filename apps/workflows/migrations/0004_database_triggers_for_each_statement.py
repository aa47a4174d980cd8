"""Database triggers saved before `for_each` existed ran once per statement: they say so explicitly, so that
the new default (`row`, one run per affected row) changes nothing for them."""

from django.db import migrations

_SET = """
UPDATE {table}
SET {column} = jsonb_set({column}::jsonb, '{{trigger,for_each}}', '"statement"')
WHERE {column}::jsonb -> 'trigger' ->> 'type' = 'database'
  AND NOT ({column}::jsonb -> 'trigger') ? 'for_each'
"""


class Migration(migrations.Migration):
    dependencies = [("workflows", "0003_operator_permissions")]

    operations = [
        migrations.RunSQL(
            [
                _SET.format(table="workflows_workflowversion", column="definition"),
                _SET.format(table="workflows_workflow", column="draft"),
            ],
            reverse_sql=migrations.RunSQL.noop,
        )
    ]
