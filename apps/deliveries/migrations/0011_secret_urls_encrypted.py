"""Secrets inside URLs leave the clear: webhook endpoint URLs are encrypted in place (reversible), a
chat delivery's `webhook_url` is sealed in its payload (reversible), and the copies that were only ever
for display (deliveries' `target`, the `url` of webhook audit rows) are masked. Masking is one-way, and
migrating backwards leaves those copies masked: they never served to send anything, and the full URL
stays on the endpoint (or the sealed payload). Audit rows are updated through the append-only trigger's
transaction-local redaction bypass (audit 0004), not by disabling the trigger."""

import json
from urllib.parse import urlsplit

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
    with schema_editor.connection.cursor() as cursor:
        for rows in _batches(cursor, "SELECT id, payload->>'webhook_url' FROM deliveries_delivery "
                                     "WHERE channel = 'chat' AND payload ? 'webhook_url' {after} ORDER BY id LIMIT %s"):
            for delivery_id, url in rows:
                cursor.execute("UPDATE deliveries_delivery SET payload = jsonb_set(payload, '{webhook_url}', %s::jsonb) "
                               "WHERE id = %s", [json.dumps(change(url)), delivery_id])


def secret_copies_seal_and_mask(apps, schema_editor):
    _payload_urls(apps, schema_editor, seal)
    with schema_editor.connection.cursor() as cursor:
        for rows in _batches(cursor, "SELECT id, target FROM deliveries_delivery WHERE channel IN ('webhook', 'chat') "
                                     "AND target ~* '^https?://' AND target NOT LIKE '%%/…%%' {after} "
                                     "ORDER BY id LIMIT %s"):
            for delivery_id, target in rows:
                cursor.execute("UPDATE deliveries_delivery SET target = %s WHERE id = %s",
                               [url_mask(target), delivery_id])
    # Audit rows are append-only (a trigger refuses updates); this redaction of secrets is the one exception,
    # let through by the trigger for this transaction only (audit 0004), and itself audited.
    masked = 0
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SET LOCAL rowbell.audit_redaction = 'on'")
        for rows in _batches(cursor, "SELECT id, data->>'url' FROM audit_auditevent WHERE target_type = 'webhook' "
                                     "AND data->>'url' ~* '^https?://' AND data->>'url' NOT LIKE '%%/…%%' {after} "
                                     "ORDER BY id LIMIT %s"):
            for audit_id, url in rows:
                cursor.execute("UPDATE audit_auditevent SET data = jsonb_set(data, '{url}', %s::jsonb) WHERE id = %s",
                               [json.dumps(url_mask(url)), audit_id])
            masked += len(rows)
        cursor.execute("SET LOCAL rowbell.audit_redaction = 'off'")
        if masked:
            cursor.execute("INSERT INTO audit_auditevent (created_at, actor, action, target_type, target_id, data) "
                           "VALUES (now(), 'rowbell', 'audit.urls_masked', 'webhook', '', %s::jsonb)",
                           [json.dumps({"rows": masked, "why": "Webhook URLs may carry tokens: shown masked."})])


def chat_payloads_unseal(apps, schema_editor):
    """Backwards: chat payloads' webhook URLs are unsealed. The masking is one-way and is NOT undone:
    deliveries' `target` and the `url` of webhook audit rows stay masked (the clear URL is not kept
    anywhere to restore them from). They were display copies, never used to send (see the module
    docstring)."""
    _payload_urls(apps, schema_editor, lambda url: unseal(url) if is_sealed(url) else url)


class Migration(migrations.Migration):

    dependencies = [
        ('deliveries', '0010_provider_event_webhooks'),
        ('audit', '0004_append_only_redaction_bypass'),
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
