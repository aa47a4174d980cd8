"""Pick-up moves from an (xid, id) cursor behind the cluster's xmin horizon to batches closed between two
snapshots (see apps/connections/pickup.py); each connection's position is carried over exactly."""

from django.db import migrations, models

NOTHING_CONSUMED = "1:1:"
MAX_ID = 2**63 - 1


def pickup_state_from_cursor(cursor_xid: int, cursor_id: int) -> dict:
    """The batch state that has read exactly what the old cursor had read.

    The old poller read the events at or below (cursor_xid, cursor_id), in (xid, id) order, and only from
    transactions that had ended. So every event of a transaction below cursor_xid is read: that is the
    snapshot `X:X:` (X = cursor_xid), in which exactly the xids below X are visible. The events of
    transaction X itself are read up to cursor_id: the in-batch cursor (X, cursor_id) skips them in the
    first batch, which is opened on the next poll. A cursor at 0 (nothing read yet) reads the whole log.
    """
    xid = int(cursor_xid)
    if xid <= 0:
        return {"consumed_snapshot": NOTHING_CONSUMED, "batch_snapshot": "", "cursor_xid": 0, "cursor_id": 0}
    return {"consumed_snapshot": f"{xid}:{xid}:", "batch_snapshot": "", "cursor_xid": xid,
            "cursor_id": int(cursor_id)}


def cursor_from_pickup_state(consumed_snapshot: str, cursor_xid: int, cursor_id: int) -> dict:
    """Back to an old cursor that reads again rather than skips: every transaction below the consumed
    snapshot's xmin is read (an event read again is recorded once)."""
    if consumed_snapshot == f"{int(cursor_xid)}:{int(cursor_xid)}:":
        return {"cursor_xid": int(cursor_xid), "cursor_id": int(cursor_id)}  # not moved since converted
    xmin = int(consumed_snapshot.split(":", 1)[0])
    return {"cursor_xid": xmin - 1, "cursor_id": MAX_ID} if xmin > 1 else {"cursor_xid": 0, "cursor_id": 0}


def forwards(apps, schema_editor):
    Connection = apps.get_model("connections", "Connection")
    for pk, cursor_xid, cursor_id in Connection.objects.values_list("id", "cursor_xid", "cursor_id"):
        Connection.objects.filter(id=pk).update(**pickup_state_from_cursor(cursor_xid, cursor_id))


def backwards(apps, schema_editor):
    Connection = apps.get_model("connections", "Connection")
    rows = Connection.objects.values_list("id", "consumed_snapshot", "cursor_xid", "cursor_id")
    for pk, consumed, cursor_xid, cursor_id in rows:
        Connection.objects.filter(id=pk).update(**cursor_from_pickup_state(consumed, cursor_xid, cursor_id))


class Migration(migrations.Migration):

    dependencies = [
        ('connections', '0003_connection_health'),
    ]

    operations = [
        migrations.AddField(
            model_name='connection',
            name='batch_snapshot',
            field=models.TextField(blank=True, default='', help_text='pg_snapshot ending the batch being read; empty when none is.'),
        ),
        migrations.AddField(
            model_name='connection',
            name='consumed_snapshot',
            field=models.TextField(default='1:1:', help_text='pg_snapshot (xmin:xmax:xip,...): its visible events are read.'),
        ),
        migrations.AlterField(
            model_name='connection',
            name='cursor_id',
            field=models.BigIntegerField(default=0, help_text='Id of the last event read in the open batch.'),
        ),
        migrations.AlterField(
            model_name='connection',
            name='cursor_xid',
            field=models.DecimalField(decimal_places=0, default=0, help_text='Transaction id of the last event read in the open batch.', max_digits=20),
        ),
        migrations.RunPython(forwards, backwards, elidable=True),
    ]
