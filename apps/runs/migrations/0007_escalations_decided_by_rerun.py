"""Failed runs that were already re-run before decisions were recorded count as decided (re-run), so the
dashboard's "waiting for a decision" starts with only the failures nobody acted on."""

from django.db import migrations
from django.db.models import Exists, OuterRef


def decided_by_rerun(apps, schema_editor):
    Escalation = apps.get_model("runs", "Escalation")
    Run = apps.get_model("runs", "Run")
    rerun = Run.objects.filter(rerun_of_id=OuterRef("run_id"))
    for escalation in Escalation.objects.filter(decided_at__isnull=True).filter(Exists(rerun)).iterator():
        first = Run.objects.filter(rerun_of_id=escalation.run_id).order_by("created_at").first()
        escalation.decision, escalation.decided_at, escalation.decided_by = "rerun", first.created_at, "rowbell"
        escalation.save(update_fields=["decision", "decided_at", "decided_by"])


class Migration(migrations.Migration):
    dependencies = [("runs", "0006_batch_plural")]

    operations = [migrations.RunPython(decided_by_rerun, migrations.RunPython.noop)]
