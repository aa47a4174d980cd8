"""A run's cause as a trigger source's name and the cause's id in it (apps.runs.triggers), instead of
one column per source: a new source needs no migration of runs_run.

1. Add `source` and `cause_id`; fill them from the columns that said it before: a run with a request was
   launched by the API (`api`, the request's id), one with an event by a row change (`database`, the
   event's id). Every existing row has one of the two (the check `run_has_a_cause` said so).
2. Launch stays idempotent for every source with one unique key, (workflow version, source, cause id,
   recipient index) for runs that are not re-runs. It holds what the two keys it replaces held: one run
   per recipient of a request (a request names its version) and one per (workflow version, event).
3. The check `run_has_a_cause` now asks for a source and a cause id.

Backwards: the old keys and check come back; the new columns go.
"""

from django.db import migrations, models

FILL = """
UPDATE runs_run
SET source = CASE WHEN request_id IS NOT NULL THEN 'api' ELSE 'database' END,
    cause_id = COALESCE(request_id::text, event_id::text)
WHERE source = ''
"""


class Migration(migrations.Migration):

    dependencies = [
        ("runs", "0009_recipient_chat_webhook_sealed"),
    ]

    operations = [
        migrations.AddField(model_name="run", name="source", field=models.CharField(default="", max_length=20)),
        migrations.AddField(model_name="run", name="cause_id", field=models.CharField(default="", max_length=100)),
        migrations.RunSQL(FILL, migrations.RunSQL.noop),
        migrations.RemoveConstraint(model_name="run", name="run_once_per_recipient"),
        migrations.RemoveConstraint(model_name="run", name="run_once_per_event"),
        migrations.RemoveConstraint(model_name="run", name="run_has_a_cause"),
        migrations.AddConstraint(
            model_name="run",
            constraint=models.UniqueConstraint(condition=models.Q(("rerun_of__isnull", True)),
                                               fields=("workflow_version", "source", "cause_id", "recipient_index"),
                                               name="run_once_per_cause"),
        ),
        migrations.AddConstraint(
            model_name="run",
            constraint=models.CheckConstraint(condition=models.Q(models.Q(("source", ""), _negated=True),
                                                                 models.Q(("cause_id", ""), _negated=True)),
                                              name="run_has_a_cause"),
        ),
    ]
