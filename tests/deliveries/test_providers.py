"""Provider configuration: checked, encrypted at rest, never shown."""

import json

import pytest
from django.db import connection

from apps.deliveries.models import ProviderConfig
from tests.deliveries.channels.provided import SID, TOKEN, _configure

pytestmark = pytest.mark.django_db


def test_credentials_are_checked_encrypted_and_never_shown(product, product_client):
    bad = product_client.put(
        "/api/v1/providers/sms",
        {
            "provider": "twilio",
            "credentials": {"account_sid": "nope", "auth_token": TOKEN},
            "options": {"sender": "12345"},
        },
        format="json",
    )
    assert bad.status_code == 400
    assert {f["field"] for f in bad.json()["error"]["fields"]} == {"credentials.account_sid", "options.sender"}
    assert (
        product_client.put("/api/v1/providers/fax", {"provider": "x", "credentials": {}}, format="json").json()[
            "error"
        ]["fields"][0]["field"]
        == "channel"
    )
    assert (
        product_client.put(
            "/api/v1/providers/chat",
            {"provider": "slack", "credentials": {"webhook_url": "http://10.0.0.7/hook"}},
            format="json",
        ).json()["error"]["fields"][0]["field"]
        == "credentials.webhook_url"
    )

    body = _configure(
        product_client, "sms", "twilio", {"account_sid": SID, "auth_token": TOKEN}, {"sender": "+15005550006"}
    )
    assert body["credentials_set"] == ["account_sid", "auth_token"] and TOKEN not in json.dumps(body)
    listed = product_client.get("/api/v1/providers").json()
    assert TOKEN not in json.dumps(listed) and listed[0]["provider"] == "twilio"
    with connection.cursor() as cursor:
        cursor.execute("SELECT credentials FROM deliveries_providerconfig")
        stored = cursor.fetchone()[0]
    assert TOKEN not in stored and SID not in stored
    assert json.loads(ProviderConfig.objects.get().credentials)["auth_token"] == TOKEN

    assert product_client.delete("/api/v1/providers/sms?organization=garbage").status_code == 400
    assert ProviderConfig.objects.exists()  # a bad organization id deletes nothing
    assert product_client.delete("/api/v1/providers/sms").status_code == 204
    assert product_client.delete("/api/v1/providers/sms").status_code == 404
