"""A recipient's `chat_webhook` (an incoming-webhook URL, a bearer credential) is sealed in place in
trigger requests and runs (apps.core.encryption.seal); reversible.

Only the `chat_webhook` string changes, in SQL (jsonb_set): the rest of each recipient never passes
through Python, so its numbers keep their digits (`1.00`, `12345678901234567890.123456789`; runs 0008).
The tables can be large: rows go BATCH at a time, each batch in a transaction of its own (the migration
is not atomic). A run cut short is run again: only values not yet sealed (or, backwards, still sealed)
are selected, so a batch already done is not done twice.
"""

from django.db import migrations, transaction

from apps.core.encryption import SEALED_PREFIX, seal, unseal

BATCH = 1000

# Runs: one recipient object each. `starts_with(...) = %s` selects the values still to change.
RUN_VALUES = """
SELECT id, recipient->>'chat_webhook' FROM runs_run
WHERE jsonb_typeof(recipient->'chat_webhook') = 'string' AND starts_with(recipient->>'chat_webhook', %s) = %s
  AND id > %s
ORDER BY id LIMIT %s
"""
RUN_UPDATE = "UPDATE runs_run SET recipient = jsonb_set(recipient, '{chat_webhook}', to_jsonb(%s::text)) WHERE id = %s"

# Trigger requests: an array of recipients each; a batch is BATCH requests, then their chat webhooks.
REQUEST_IDS = """
SELECT id FROM runs_triggerrequest
WHERE jsonb_typeof(recipients) = 'array' AND jsonb_path_exists(recipients, '$[*].chat_webhook')
  AND (%s::uuid IS NULL OR id > %s::uuid)
ORDER BY id LIMIT %s
"""
REQUEST_VALUES = """
SELECT r.id, e.position - 1, e.recipient->>'chat_webhook'
FROM runs_triggerrequest r
CROSS JOIN LATERAL jsonb_array_elements(r.recipients) WITH ORDINALITY AS e(recipient, position)
WHERE r.id = ANY(%s) AND jsonb_typeof(e.recipient->'chat_webhook') = 'string'
  AND starts_with(e.recipient->>'chat_webhook', %s) = %s
"""
REQUEST_UPDATE = """
UPDATE runs_triggerrequest SET recipients = jsonb_set(recipients, ARRAY[%s::text, 'chat_webhook'], to_jsonb(%s::text))
WHERE id = %s
"""


def _rewrite(schema_editor, change, *, sealed: bool):
    """Replace each recipient's `chat_webhook` string by `change(value)`, for the values whose sealed state
    is `sealed` (False to seal, True to unseal)."""
    connection = schema_editor.connection
    last = 0
    while True:
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            cursor.execute(RUN_VALUES, [SEALED_PREFIX, sealed, last, BATCH])
            rows = cursor.fetchall()
            for run_id, value in rows:
                cursor.execute(RUN_UPDATE, [change(value), run_id])
        if not rows:
            break
        last = rows[-1][0]
    last = None
    while True:
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            cursor.execute(REQUEST_IDS, [last, last, BATCH])
            ids = [row[0] for row in cursor.fetchall()]
            if ids:
                cursor.execute(REQUEST_VALUES, [ids, SEALED_PREFIX, sealed])
                for request_id, index, value in cursor.fetchall():
                    cursor.execute(REQUEST_UPDATE, [index, change(value), request_id])
        if not ids:
            break
        last = ids[-1]


def chat_webhooks_seal(apps, schema_editor):
    _rewrite(schema_editor, seal, sealed=False)


def chat_webhooks_unseal(apps, schema_editor):
    _rewrite(schema_editor, unseal, sealed=True)


class Migration(migrations.Migration):
    atomic = False  # each batch commits on its own (see the module docstring)

    dependencies = [
        ('runs', '0008_run_state_exact_numbers'),
    ]

    operations = [
        migrations.RunPython(chat_webhooks_seal, chat_webhooks_unseal),
    ]
