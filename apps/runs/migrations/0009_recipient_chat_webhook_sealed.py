"""A recipient's `chat_webhook` (an incoming-webhook URL, a bearer credential) is sealed in place in
trigger requests and runs (apps.core.encryption.seal); reversible."""

import json

from django.db import migrations

from apps.core.encryption import is_sealed, seal, unseal

BATCH = 1000


def _recipient_changed(recipient, change):
    if isinstance(recipient, dict) and isinstance(recipient.get("chat_webhook"), str):
        return {**recipient, "chat_webhook": change(recipient["chat_webhook"])}
    return recipient


def _rewrite(schema_editor, change):
    with schema_editor.connection.cursor() as cursor:
        for table, column, many in (("runs_run", "recipient", False), ("runs_triggerrequest", "recipients", True)):
            test = ("jsonb_path_exists({c}, '$[*].chat_webhook')" if many else "{c} ? 'chat_webhook'").format(c=column)
            last = None
            while True:
                # Keyset pagination by id (a uuid for requests, a bigint for runs): the tables can be large.
                cursor.execute(f"SELECT id, {column} FROM {table} WHERE {test}"
                               + ("" if last is None else " AND id > %s") + " ORDER BY id LIMIT %s",
                               ([] if last is None else [last]) + [BATCH])
                rows = cursor.fetchall()
                if not rows:
                    break
                for row_id, value in rows:
                    value = json.loads(value) if isinstance(value, str) else value
                    new = ([_recipient_changed(r, change) for r in value] if many
                           else _recipient_changed(value, change))
                    cursor.execute(f"UPDATE {table} SET {column} = %s::jsonb WHERE id = %s", [json.dumps(new), row_id])
                last = rows[-1][0]


def chat_webhooks_seal(apps, schema_editor):
    _rewrite(schema_editor, seal)


def chat_webhooks_unseal(apps, schema_editor):
    _rewrite(schema_editor, lambda value: unseal(value) if is_sealed(value) else value)


class Migration(migrations.Migration):

    dependencies = [
        ('runs', '0008_run_state_exact_numbers'),
    ]

    operations = [
        migrations.RunPython(chat_webhooks_seal, chat_webhooks_unseal),
    ]
