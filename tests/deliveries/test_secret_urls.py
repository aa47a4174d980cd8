"""Secrets inside URLs (an endpoint's token, a recipient's chat webhook) are encrypted at rest and shown
masked: in API answers, audit rows, the admin and attempt records; the full URL is still what is called."""

import importlib
import json
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.urls import reverse

from apps.audit.models import AuditEvent
from apps.core import exactjson
from apps.core.encryption import encrypt
from apps.core.masking import url_mask
from apps.deliveries.models import Delivery, DeliveryStatus, WebhookEndpoint
from apps.deliveries.services import deliveries_send
from apps.runs.models import Run
from apps.runs.services import request_start, runs_execute
from tests import factories
from tests.deliveries.channels.provided import _configure

pytestmark = pytest.mark.django_db

TOKEN = "T0SECRET/B0SECRET/tok9XyZsecretvalue1234"


@pytest.fixture
def admin_client(client):
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))
    return client


def _column(sql: str, *params) -> str:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return json.dumps([list(map(str, row)) for row in cursor.fetchall()])


def _send_all():
    ids = list(Delivery.objects.filter(status=DeliveryStatus.QUEUED).values_list("id", flat=True))
    deliveries_send(delivery_ids=ids)


def test_an_endpoint_url_is_stored_encrypted_and_shown_masked(product, product_client, receiver, admin_client):
    url = receiver.url(f"/services/{TOKEN}?sig=querysecret9")
    created = product_client.post("/api/v1/webhooks", {"url": url}, format="json")
    assert created.status_code == 201
    endpoint_id = created.json()["id"]
    masked = url_mask(url)
    assert masked == f"http://127.0.0.1:{receiver.port}/…ret9" and created.json()["url"] == masked

    # At rest: ciphertext only (read with SQL, past the model's decryption); the host is kept for search.
    raw = _column("SELECT url, host FROM deliveries_webhookendpoint WHERE id = %s", endpoint_id)
    assert "tok9XyZ" not in raw and "querysecret" not in raw and "127.0.0.1" in raw

    # Sent to the full URL, recorded masked.
    factories.make_workflow(product, key="w", steps=[factories.webhook_step(WebhookEndpoint.objects.get())])
    triggered = product_client.post("/api/v1/trigger", {"workflow": "w", "to": ["u1"]}, format="json")
    runs_execute(run_ids=request_start(request_id=uuid.UUID(triggered.json()["request_id"])))
    _send_all()
    assert receiver.requests[-1]["path"] == f"/services/{TOKEN}?sig=querysecret9"
    delivery = Delivery.objects.get()
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.target == masked

    shown = [
        product_client.get(f"/api/v1/webhooks/{endpoint_id}").content,
        product_client.get("/api/v1/webhooks").content,
        product_client.get("/api/v1/deliveries").content,
        product_client.get(f"/api/v1/deliveries/{delivery.message_id}").content,
        product_client.get("/api/v1/audit").content,
        exactjson.dumps(list(AuditEvent.objects.values_list("data", flat=True))).encode(),
        admin_client.get(reverse("admin:deliveries_webhookendpoint_changelist")).content,
        admin_client.get(reverse("admin:deliveries_webhookendpoint_change", args=[endpoint_id])).content,
        admin_client.get(reverse("admin:deliveries_delivery_changelist")).content,
        admin_client.get(reverse("admin:deliveries_delivery_change", args=[delivery.id])).content,
    ]
    for page in shown:
        assert b"tok9XyZ" not in page and b"querysecret" not in page
    assert masked.encode() in shown[0] and masked.encode() in shown[6]
    # The admin finds it by host.
    found = admin_client.get(reverse("admin:deliveries_webhookendpoint_changelist"), {"q": "127.0.0.1"})
    assert masked.encode() in found.content


def test_a_recipients_chat_webhook_is_stored_sealed_and_shown_masked(product, product_client, receiver, admin_client):
    factories.make_workflow(
        product, key="w", steps=[{"id": "ping", "type": "notify", "channel": "chat", "text": "Order {{ data.order }}"}]
    )
    _configure(product_client, "chat", "slack", {"webhook_url": receiver.url("/services/ours")})
    theirs = receiver.url(f"/services/{TOKEN}")
    masked = url_mask(theirs)
    answer = product_client.post(
        "/api/v1/trigger",
        {"workflow": "w", "to": [{"id": "acme", "chat_webhook": theirs}], "data": {"order": 7}},
        format="json",
    )
    assert answer.status_code == 202
    request_id = answer.json()["request_id"]
    runs_execute(run_ids=request_start(request_id=uuid.UUID(request_id)))
    _send_all()
    assert [r["path"] for r in receiver.requests] == [f"/services/{TOKEN}"]  # the full URL is what is called
    delivery = Delivery.objects.get()
    assert delivery.status == DeliveryStatus.SENT and delivery.target == masked

    raw = (
        _column("SELECT recipients FROM runs_triggerrequest")
        + _column("SELECT recipient FROM runs_run")
        + _column("SELECT payload, target FROM deliveries_delivery")
        + _column("SELECT error, response_excerpt FROM deliveries_deliveryattempt")
        + _column("SELECT data FROM audit_auditevent")
    )
    assert "tok9XyZ" not in raw and "sealed:v1:" in raw

    run = Run.objects.get()
    shown = [
        product_client.get(f"/api/v1/requests/{request_id}").content,
        product_client.get(f"/api/v1/runs/{run.id}").content,
        product_client.get("/api/v1/runs").content,
        product_client.get("/api/v1/deliveries").content,
        product_client.get(f"/api/v1/deliveries/{delivery.message_id}").content,
        product_client.get("/api/v1/audit").content,
        admin_client.get(reverse("admin:runs_run_change", args=[run.id])).content,
        admin_client.get(reverse("admin:runs_triggerrequest_change", args=[request_id])).content,
        admin_client.get(reverse("admin:deliveries_delivery_changelist")).content,
        admin_client.get(reverse("admin:deliveries_delivery_change", args=[delivery.id])).content,
    ]
    for page in shown:
        assert b"tok9XyZ" not in page and b"sealed:v1:" not in page
    assert masked.encode() in shown[0] and masked.encode() in shown[1] and masked.encode() in shown[6]
    # The same call again is the same request (idempotency compares the clear body, not the ciphertext).
    again = product_client.post(
        "/api/v1/trigger",
        {"workflow": "w", "to": [{"id": "acme", "chat_webhook": theirs}], "data": {"order": 7}},
        format="json",
        HTTP_IDEMPOTENCY_KEY="k1",
    )
    repeat = product_client.post(
        "/api/v1/trigger",
        {"workflow": "w", "to": [{"id": "acme", "chat_webhook": theirs}], "data": {"order": 7}},
        format="json",
        HTTP_IDEMPOTENCY_KEY="k1",
    )
    assert repeat.json() == {**again.json(), "status": "duplicate"}


def test_attempt_errors_quote_urls_masked(product, receiver):
    from apps.deliveries import outbound

    url = f"http://127.0.0.1:{receiver.port}/services/{TOKEN}"
    message = outbound._url_masked_in(f"Request failed: InvalidURL: {url}", url)
    assert "tok9XyZ" not in message and url_mask(url) in message


def test_the_migration_encrypts_existing_endpoint_urls_and_masks_their_copies(product):
    migration = importlib.import_module("apps.deliveries.migrations.0011_secret_urls_encrypted")
    endpoint = factories.make_endpoint(product, "https://hooks.example.com/x")
    url = f"https://hooks.example.com/services/{TOKEN}"
    with connection.cursor() as cursor:  # as rows were before: the URL in clear, in the audit row too
        cursor.execute("UPDATE deliveries_webhookendpoint SET url = %s, host = '' WHERE id = %s", [url, endpoint.id])
        cursor.execute(
            "INSERT INTO audit_auditevent (created_at, actor, action, target_type, target_id, data) "
            "VALUES (now(), 'test', 'webhook.created', 'webhook', %s, jsonb_build_object('url', %s::text))",
            [str(endpoint.id), url],
        )
    migration.endpoint_urls_encrypt(None, connection.schema_editor())
    migration.secret_copies_seal_and_mask(None, connection.schema_editor())
    endpoint = WebhookEndpoint.objects.get(id=endpoint.id)
    assert endpoint.url == url and endpoint.host == "hooks.example.com"
    raw = _column("SELECT url FROM deliveries_webhookendpoint") + _column("SELECT data FROM audit_auditevent")
    assert "tok9XyZ" not in raw and AuditEvent.objects.filter(action="audit.urls_masked").count() == 1
    migration.endpoint_urls_decrypt(None, connection.schema_editor())
    assert _column("SELECT url FROM deliveries_webhookendpoint WHERE id = %s", endpoint.id) == json.dumps([[url]])
    # Back to encrypted, as the migrated schema expects.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE deliveries_webhookendpoint SET url = %s WHERE id = %s", [encrypt(url), endpoint.id])


def test_the_migration_seals_existing_recipients_chat_webhooks(product, product_client):
    migration = importlib.import_module("apps.runs.migrations.0009_recipient_chat_webhook_sealed")
    factories.make_workflow(product, key="w", steps=[factories.email_step()])
    answer = product_client.post("/api/v1/trigger", {"workflow": "w", "to": [{"id": "acme"}]}, format="json")
    runs_execute(run_ids=request_start(request_id=uuid.UUID(answer.json()["request_id"])))
    url = f"https://hooks.slack.com/services/{TOKEN}"
    with connection.cursor() as cursor:  # as rows were before: in clear
        cursor.execute(
            "UPDATE runs_run SET recipient = jsonb_build_object('id', 'acme', 'chat_webhook', %s::text)", [url]
        )
        cursor.execute(
            "UPDATE runs_triggerrequest SET recipients = jsonb_build_array("
            "jsonb_build_object('id', 'acme', 'chat_webhook', %s::text))",
            [url],
        )
    migration.chat_webhooks_seal(None, connection.schema_editor())
    raw = _column("SELECT recipient FROM runs_run") + _column("SELECT recipients FROM runs_triggerrequest")
    assert "tok9XyZ" not in raw and raw.count("sealed:v1:") == 2
    assert url_mask(Run.objects.get().recipient["chat_webhook"]) == "https://hooks.slack.com/…1234"
    migration.chat_webhooks_unseal(None, connection.schema_editor())
    assert Run.objects.get().recipient["chat_webhook"] == url


def test_the_chat_webhook_migration_changes_nothing_but_the_chat_webhook(product, product_client):
    migration = importlib.import_module("apps.runs.migrations.0009_recipient_chat_webhook_sealed")
    factories.make_workflow(product, key="w", steps=[factories.email_step()])
    answer = product_client.post("/api/v1/trigger", {"workflow": "w", "to": [{"id": "acme"}]}, format="json")
    runs_execute(run_ids=request_start(request_id=uuid.UUID(answer.json()["request_id"])))
    url = f"https://hooks.slack.com/services/{TOKEN}"
    # Numbers a float cannot hold: 20 significant digits and more, a scale (1.00), beyond a double's range.
    numbers = '"n": 12345678901234567890.123456789, "m": 1.00, "big": 1e400, "tiny": 1e-400'
    recipient = f'{{"id": "acme", {numbers}, "chat_webhook": "{url}"}}'
    with connection.cursor() as cursor:  # as rows were before: in clear
        cursor.execute("UPDATE runs_run SET recipient = %s::jsonb", [recipient])
        cursor.execute(
            "UPDATE runs_triggerrequest SET recipients = %s::jsonb", [f'[{{"id": "plain", {numbers}}}, {recipient}]']
        )
    others = (
        "SELECT (recipient - 'chat_webhook')::text FROM runs_run UNION ALL "
        "SELECT (recipients - 1)::text || ((recipients -> 1) - 'chat_webhook')::text FROM runs_triggerrequest"
    )
    before = _column(others)
    assert "12345678901234567890.123456789" in before and "1.00" in before

    migration.chat_webhooks_seal(None, connection.schema_editor())
    assert _column(others) == before
    raw = _column("SELECT recipient FROM runs_run") + _column("SELECT recipients FROM runs_triggerrequest")
    assert "tok9XyZ" not in raw and raw.count("sealed:v1:") == 2
    migration.chat_webhooks_seal(None, connection.schema_editor())  # again: nothing sealed twice
    assert _column(others) == before
    assert _column("SELECT recipient FROM runs_run") + _column("SELECT recipients FROM runs_triggerrequest") == raw

    migration.chat_webhooks_unseal(None, connection.schema_editor())
    assert _column(others) == before
    assert _column(
        "SELECT recipient->>'chat_webhook' FROM runs_run UNION ALL "
        "SELECT recipients->1->>'chat_webhook' FROM runs_triggerrequest"
    ) == json.dumps([[url], [url]])


def _audit_update_refused(sql: str, *params) -> bool:
    from django.db import DatabaseError, transaction

    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, params)
    except DatabaseError as exc:
        assert "append-only" in str(exc)
        return True
    return False


def test_the_url_masking_migration_needs_no_table_ownership_and_leaves_audit_rows_append_only(product, monkeypatch):
    migration = importlib.import_module("apps.deliveries.migrations.0011_secret_urls_encrypted")
    url = f"https://hooks.example.com/services/{TOKEN}"
    with connection.cursor() as cursor:
        for _ in range(3):  # as rows were before: the URL in clear
            cursor.execute(
                "INSERT INTO audit_auditevent (created_at, actor, action, target_type, target_id, data) "
                "VALUES (now(), 'test', 'webhook.created', 'webhook', '1', "
                "jsonb_build_object('url', %s::text))",
                [url],
            )
        # As a role that may update the tables but does not own them (the application's role, often).
        cursor.execute("CREATE ROLE rowbell_not_owner NOLOGIN")
        cursor.execute("GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO rowbell_not_owner")
        cursor.execute("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO rowbell_not_owner")
        cursor.execute("SET LOCAL ROLE rowbell_not_owner")
    monkeypatch.setattr(migration, "BATCH", 2)  # more rows than a batch
    migration.secret_copies_seal_and_mask(None, connection.schema_editor())
    with connection.cursor() as cursor:
        # No lock held on the audit table beyond what row updates take (DISABLE TRIGGER took ACCESS EXCLUSIVE).
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND mode = 'AccessExclusiveLock' "
            "AND relation = 'audit_auditevent'::regclass"
        )
        assert cursor.fetchone()[0] == 0
        cursor.execute("RESET ROLE")
    assert "tok9XyZ" not in _column("SELECT data FROM audit_auditevent")
    assert AuditEvent.objects.get(action="audit.urls_masked").data["rows"] == 3

    # Afterwards, in the same transaction, audit rows are append-only again.
    assert _audit_update_refused("UPDATE audit_auditevent SET data = '{}'::jsonb")
    # The bypass lets a redaction of `data` through, nothing else.
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL rowbell.audit_redaction = 'on'")
    assert _audit_update_refused("UPDATE audit_auditevent SET actor = 'someone else'")
    assert _audit_update_refused("UPDATE audit_auditevent SET data = '{}'::jsonb, action = 'other'")
    assert not _audit_update_refused("UPDATE audit_auditevent SET data = '{}'::jsonb WHERE action = 'webhook.created'")
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL rowbell.audit_redaction = 'off'")
    assert _audit_update_refused("UPDATE audit_auditevent SET data = '{}'::jsonb")
