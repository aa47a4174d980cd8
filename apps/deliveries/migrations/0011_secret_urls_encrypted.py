"""Secrets inside URLs leave the clear: webhook endpoint URLs are encrypted in place (reversible), a
chat delivery's `webhook_url` is sealed in its payload (reversible), and the copies that were only ever
for display (deliveries' `target`, the `url` of webhook audit rows) are masked. Masking is one-way: those
columns never served to send anything, and the full URL stays on the endpoint (or the sealed payload)."""

import apps.core.encryption
from django.db import migrations, models

from apps.core.encryption import decrypt, encrypt, is_sealed, seal, unseal
from apps.core.masking import url_mask

BATCH = 1000


def _batches(cursor, select: str):
    """Rows of `select` (which must order by and return the id first), BATCH at a time, by id."""
    last = None
    while True:
        cursor.execute(select.format(after="" if last is None else f"AND id > {int(last)}"), [BATCH])
        rows = cursor.fetchall()
        if not rows:
            return
        yield rows
        last = rows[-1][0]


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    try:
        return (urlsplit(url).hostname or "")[:255]
    except ValueError:
        return ""


def endpoint_urls_encrypt(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT id, url FROM deliveries_webhookendpoint")
        for endpoint_id, url in cursor.fetchall():
            cursor.execute("UPDATE deliveries_webhookendpoint SET url = %s, host = %s WHERE id = %s",
                           [encrypt(url), _host(url), endpoint_id])


def endpoint_urls_decrypt(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT id, url FROM deliveries_webhookendpoint")
        for endpoint_id, url in cursor.fetchall():
            cursor.execute("UPDATE deliveries_webhookendpoint SET url = %s WHERE id = %s", [decrypt(url), endpoint_id])


def _payload_urls(apps, schema_editor, change):
    import json

    with schema_editor.connection.cursor() as cursor:
        for rows in _batches(cursor, "SELECT id, payload->>'webhook_url' FROM deliveries_delivery "
                                     "WHERE channel = 'chat' AND payload ? 'webhook_url' {after} ORDER BY id LIMIT %s"):
            for delivery_id, url in rows:
                cursor.execute("UPDATE deliveries_delivery SET payload = jsonb_set(payload, '{webhook_url}', %s::jsonb) "
                               "WHERE id = %s", [json.dumps(change(url)), delivery_id])


def secret_copies_seal_and_mask(apps, schema_editor):
    import json

    _payload_urls(apps, schema_editor, seal)
    with schema_editor.connection.cursor() as cursor:
        for rows in _batches(cursor, "SELECT id, target FROM deliveries_delivery WHERE channel IN ('webhook', 'chat') "
                                     "AND target ~* '^https?://' AND target NOT LIKE '%%/…%%' {after} "
                                     "ORDER BY id LIMIT %s"):
            for delivery_id, target in rows:
                cursor.execute("UPDATE deliveries_delivery SET target = %s WHERE id = %s",
                               [url_mask(target), delivery_id])
        cursor.execute("SELECT id, data->>'url' FROM audit_auditevent WHERE target_type = 'webhook' AND data ? 'url'")
        redact = [(audit_id, url) for audit_id, url in cursor.fetchall()
                  if url and url.startswith(("http://", "https://")) and "/…" not in url]
        if not redact:
            return
        # Audit rows are append-only (a trigger refuses updates); this one redaction of secrets is the
        # exception, made with the trigger off inside this migration's transaction, and itself audited.
        cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_auditevent_append_only")
        for audit_id, url in redact:
            cursor.execute("UPDATE audit_auditevent SET data = jsonb_set(data, '{url}', %s::jsonb) WHERE id = %s",
                           [json.dumps(url_mask(url)), audit_id])
        cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_auditevent_append_only")
        cursor.execute("INSERT INTO audit_auditevent (created_at, actor, action, target_type, target_id, data) "
                       "VALUES (now(), 'rowbell', 'audit.urls_masked', 'webhook', '', %s::jsonb)",
                       [json.dumps({"rows": len(redact), "why": "Webhook URLs may carry tokens: shown masked."})])


def chat_payloads_unseal(apps, schema_editor):
    # Masked targets and audit URLs stay masked: they were display copies (see the module docstring).
    _payload_urls(apps, schema_editor, lambda url: unseal(url) if is_sealed(url) else url)


class Migration(migrations.Migration):

    dependencies = [
        ('deliveries', '0010_provider_event_webhooks'),
        ('audit', '0003_indexes_lean'),
    ]

    operations = [
        migrations.AddField(
            model_name='webhookendpoint',
            name='host',
            field=models.CharField(blank=True, default='', help_text="The URL's host, for search.", max_length=255),
        ),
        migrations.AlterField(
            model_name='webhookendpoint',
            name='url',
            field=models.TextField(),
        ),
        migrations.RunPython(endpoint_urls_encrypt, endpoint_urls_decrypt),
        migrations.AlterField(
            model_name='webhookendpoint',
            name='url',
            field=apps.core.encryption.EncryptedTextField(help_text='The full URL, encrypted at rest.'),
        ),
        migrations.RunPython(secret_copies_seal_and_mask, chat_payloads_unseal),
    ]
