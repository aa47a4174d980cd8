import json

import pytest

from apps.audit.models import AuditEvent
from apps.runs.models import TriggerRequest
from tests import factories
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def workflow(product):
    return factories.make_workflow(product, key="welcome", steps=[factories.email_step()])


def _trigger(client, body, **headers):
    return client.post("/api/v1/trigger", body, format="json", **headers)


def _fields(response):
    return {f["field"]: f["reason"] for f in response.json()["error"]["fields"]}


def test_trigger_accepts_and_returns_a_request_id_with_an_audit_row(product_client, workflow):
    response = _trigger(product_client, {"workflow": "welcome", "to": ["u1"], "data": {"order": 1}})
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "accepted"
    request = TriggerRequest.objects.get(id=body["request_id"])
    assert request.recipients == [{"id": "u1"}] and request.priority == "normal"
    assert AuditEvent.objects.filter(action="request.accepted", target_id=body["request_id"]).count() == 1


def test_same_idempotency_key_and_body_returns_the_same_request(product_client, workflow):
    body = {"workflow": "welcome", "to": ["u1"], "data": {"a": 1}}
    first = _trigger(product_client, body, HTTP_IDEMPOTENCY_KEY="order-1")
    second = _trigger(product_client, body, HTTP_IDEMPOTENCY_KEY="order-1")
    assert first.json()["request_id"] == second.json()["request_id"]
    assert second.status_code == 202 and second.json()["status"] == "duplicate"
    assert TriggerRequest.objects.count() == 1


def test_same_idempotency_key_with_another_body_is_a_conflict(product_client, workflow):
    _trigger(product_client, {"workflow": "welcome", "to": ["u1"]}, HTTP_IDEMPOTENCY_KEY="k")
    response = _trigger(product_client, {"workflow": "welcome", "to": ["u2"]}, HTTP_IDEMPOTENCY_KEY="k")
    assert response.status_code == 409
    assert "Idempotency-Key" in _fields(response)
    assert TriggerRequest.objects.count() == 1


def test_idempotency_keys_are_per_tenant(product_with_key, workflow):
    product, key = product_with_key
    org_key = client_for(key).post("/api/v1/organizations", {"name": "o"}, format="json").json()["api_key"]
    a = _trigger(client_for(key), {"workflow": "welcome", "to": ["u1"]}, HTTP_IDEMPOTENCY_KEY="k")
    b = _trigger(client_for(org_key), {"workflow": "welcome", "to": ["u2"]}, HTTP_IDEMPOTENCY_KEY="k")
    assert a.status_code == b.status_code == 202 and a.json()["request_id"] != b.json()["request_id"]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"workflow": "nope", "to": ["u1"]}, "workflow"),
        ({"to": ["u1"]}, "workflow"),
        ({"workflow": "welcome"}, "to"),
        ({"workflow": "welcome", "to": []}, "to"),
        ({"workflow": "welcome", "to": [{"id": "u1", "email": "not-an-email"}]}, "to[0].email"),
        ({"workflow": "welcome", "to": ["u1", {"name": "no id"}]}, "to[1].id"),
        ({"workflow": "welcome", "to": [{"id": "u1", "phone": "555-1234"}]}, "to[0].phone"),
        ({"workflow": "welcome", "to": [42.5]}, "to[0]"),
        ({"workflow": "welcome", "to": ["u1"], "priority": "urgent"}, "priority"),
        ({"workflow": "welcome", "to": ["u1"], "data": [1, 2]}, "data"),
    ],
)
def test_bad_trigger_bodies_name_the_field_and_the_reason(product_client, workflow, body, field):
    response = _trigger(product_client, body)
    assert response.status_code == 400
    fields = _fields(response)
    assert field in fields and fields[field], fields
    assert TriggerRequest.objects.count() == 0


def test_unpublished_workflow_is_refused_with_a_reason(product, product_client):
    factories.make_workflow(product, key="draft-only", steps=[factories.email_step()], publish=False)
    response = _trigger(product_client, {"workflow": "draft-only", "to": ["u1"]})
    assert response.status_code == 400
    assert "publish it first" in _fields(response)["workflow"]


def test_malformed_json_is_a_400_in_the_error_shape(product_client, workflow):
    response = product_client.post("/api/v1/trigger", data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


def test_oversized_body_is_refused_with_413(product_client, workflow, settings):
    settings.ROWBELL_MAX_BODY_BYTES = 1000
    body = json.dumps({"workflow": "welcome", "to": ["u1"], "data": {"blob": "x" * 2000}})
    response = product_client.post("/api/v1/trigger", data=body, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert TriggerRequest.objects.count() == 0


def test_too_many_recipients_is_refused(product_client, workflow, settings):
    settings.ROWBELL_MAX_RECIPIENTS = 3
    response = _trigger(product_client, {"workflow": "welcome", "to": ["a", "b", "c", "d"]})
    assert response.status_code == 400 and "to" in _fields(response)


def test_bad_idempotency_key_header_is_refused(product_client, workflow):
    response = _trigger(product_client, {"workflow": "welcome", "to": ["u1"]}, HTTP_IDEMPOTENCY_KEY="has space")
    assert response.status_code == 400 and "Idempotency-Key" in _fields(response)


def test_unknown_api_path_answers_json_404(product_client):
    response = product_client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "code": "not_found",
            "message": "No endpoint at /api/v1/nothing-here: the API reference is at /api/docs/.",
        }
    }


def test_request_status_is_scoped_to_the_organization(product_with_key, workflow):
    product, key = product_with_key
    org1 = client_for(client_for(key).post("/api/v1/organizations", {"name": "1"}, format="json").json()["api_key"])
    org2 = client_for(client_for(key).post("/api/v1/organizations", {"name": "2"}, format="json").json()["api_key"])
    request_id = _trigger(org1, {"workflow": "welcome", "to": ["u1"]}).json()["request_id"]
    assert org1.get(f"/api/v1/requests/{request_id}").json()["status"] == "accepted"
    assert client_for(key).get(f"/api/v1/requests/{request_id}").status_code == 200
    assert org2.get(f"/api/v1/requests/{request_id}").status_code == 404
    other_product_key = factories.make_product("Other")[1]
    assert client_for(other_product_key).get(f"/api/v1/requests/{request_id}").status_code == 404


def test_audit_lists_only_the_callers_rows(product_with_key, workflow):
    product, key = product_with_key
    org_key = client_for(key).post("/api/v1/organizations", {"name": "o"}, format="json").json()["api_key"]
    _trigger(client_for(org_key), {"workflow": "welcome", "to": ["u1"]})
    factories.make_product("Other")
    org_rows = client_for(org_key).get("/api/v1/audit").json()["results"]
    assert {r["action"] for r in org_rows} == {"organization.created", "api_key.created", "request.accepted"}
    product_rows = client_for(key).get("/api/v1/audit?action=workflow.").json()["results"]
    assert {r["action"] for r in product_rows} == {"workflow.created", "workflow.published"}


def test_a_revoked_key_stops_working_on_the_trigger_path_at_once(product_with_key, workflow):
    product, key = product_with_key
    client = client_for(key)
    # The first call caches the key's (immutable) material; revocation must still apply at once.
    assert _trigger(client, {"workflow": "welcome", "to": ["u1"]}).status_code == 202
    assert client.post(f"/api/v1/keys/{key.split('.')[0]}/revoke").status_code == 200
    response = _trigger(client, {"workflow": "welcome", "to": ["u2"]})
    assert response.status_code == 401
    assert TriggerRequest.objects.count() == 1


def test_a_wrong_secret_with_a_cached_prefix_is_refused(product_with_key, workflow):
    product, key = product_with_key
    assert _trigger(client_for(key), {"workflow": "welcome", "to": ["u1"]}).status_code == 202
    forged = key.split(".")[0] + ".not-the-secret"
    assert _trigger(client_for(forged), {"workflow": "welcome", "to": ["u1"]}).status_code == 401


def test_an_expired_key_is_refused_on_the_trigger_path(product_with_key, workflow):
    from apps.tenants.models import ApiKey

    product, key = product_with_key
    assert _trigger(client_for(key), {"workflow": "welcome", "to": ["u1"]}).status_code == 202
    ApiKey.objects.filter(prefix=key.split(".")[0]).update(expiry_date="2000-01-01T00:00:00Z")
    assert _trigger(client_for(key), {"workflow": "welcome", "to": ["u2"]}).status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"workflow": "welcome", "to": ["u1"]},
        {
            "workflow": "welcome",
            "to": ["u1", {"id": 7, "email": "a@example.com", "phone": "+14155550123", "x": [1]}],
            "data": {"k": {"n": 1}},
            "priority": "high",
        },
        {"workflow": "welcome", "to": [{"id": "u1", "name": None}], "data": {}, "priority": "low"},
    ],
)
def test_fast_validation_agrees_with_the_serializer(body):
    from apps.runs.apis import TriggerInputSerializer, trigger_input_fast

    serializer = TriggerInputSerializer(data=body)
    assert serializer.is_valid(), serializer.errors
    assert trigger_input_fast(body) == dict(serializer.validated_data)


@pytest.mark.parametrize(
    "body",
    [
        {"workflow": " welcome ", "to": ["u1"]},
        {"workflow": "welcome", "to": ["u1"], "extra": 1},
        {"workflow": "welcome", "to": [{"id": "u1", "email": "bad"}]},
        {"workflow": "welcome", "to": []},
        {"workflow": "welcome", "to": [True]},
        {"workflow": "welcome", "to": ["u1"], "priority": "urgent"},
        [1, 2],
    ],
)
def test_fast_validation_leaves_everything_else_to_the_serializer(body):
    from apps.runs.apis import trigger_input_fast

    assert trigger_input_fast(body) is None


@pytest.mark.django_db(transaction=True)
def test_a_lost_database_connection_answers_503_and_is_replaced(product_with_key):
    import psycopg
    from django.db import connection

    product, key = product_with_key
    factories.make_workflow(product, key="welcome", steps=[factories.email_step()])
    client = client_for(key)
    assert _trigger(client, {"workflow": "welcome", "to": ["u1"]}).status_code == 202
    # Kill this process's database session, as a database restart would.
    pid = connection.connection.info.backend_pid
    cfg = connection.settings_dict
    with psycopg.connect(
        host=cfg["HOST"] or "127.0.0.1", port=cfg["PORT"] or 5432, user=cfg["USER"], dbname=cfg["NAME"], autocommit=True
    ) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])
    response = _trigger(client, {"workflow": "welcome", "to": ["u2"]})
    assert response.status_code == 503 and response["Retry-After"] == "1"
    assert response.json()["error"]["code"] == "database_unavailable"
    # At the end of a request Django discards the broken connection; the next call works.
    connection.close_if_unusable_or_obsolete()
    assert _trigger(client, {"workflow": "welcome", "to": ["u3"]}).status_code == 202
    assert TriggerRequest.objects.count() == 2


@pytest.mark.parametrize(
    "body, field",
    [
        ({"workflow": "welcome", "to": ["u1"], "data": {"x": "a\u0000b"}}, "data.x"),
        ({"workflow": "welcome", "to": [{"id": "u1", "name": "a\u0000"}]}, "to[0].name"),
    ],
)
def test_nul_characters_are_refused_not_a_500(product_client, workflow, body, field):
    response = _trigger(product_client, body)
    assert response.status_code == 400 and "NUL character" in _fields(response)[field]


@pytest.mark.parametrize(
    "body, field",
    [
        ('{"workflow": "welcome", "to": ["u1"], "data": {"x": "\\ud83d"}}', "data.x"),
        ('{"workflow": "welcome", "to": ["u1"], "data": {"deep": [{"y": "ok \\udc00 end"}]}}', "data.deep[0].y"),
        ('{"workflow": "welcome", "to": [{"id": "\\ud83d", "email": "a@example.com"}]}', "to[0].id"),
        ('{"workflow": "welcome", "to": ["u1"], "data": {"\\ud83d": 1}}', r"data.\ud83d"),
    ],
)
def test_unpaired_surrogates_are_refused_with_their_place_not_a_500(product_client, workflow, body, field):
    response = product_client.post("/api/v1/trigger", data=body, content_type="application/json")
    assert response.status_code == 400
    assert "unpaired surrogate" in _fields(response)[field]
    assert TriggerRequest.objects.count() == 0


def test_a_paired_surrogate_escape_is_ordinary_text(product_client, workflow):
    body = '{"workflow": "welcome", "to": ["u1"], "data": {"x": "\\ud83d\\ude00"}}'
    response = product_client.post("/api/v1/trigger", data=body, content_type="application/json")
    assert response.status_code == 202
    assert TriggerRequest.objects.get().data == {"x": "\U0001f600"}


def test_json_nested_too_deeply_is_a_parse_error(product_client, workflow):
    response = product_client.post("/api/v1/trigger", data="[" * 5000 + "]" * 5000, content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "parse_error"


@pytest.mark.parametrize(
    "body, field, hint",
    [
        ({"workflow": "welcome", "to": ["u1"], "datta": {"order": 1}}, "datta", "Did you mean 'data'?"),
        ({"workflow": "welcome", "to": ["u1"], "priorty": "high"}, "priorty", "Did you mean 'priority'?"),
        ({"workflow": "welcome", "to": ["u1"], "sandbox": True}, "sandbox", "The fields are: workflow, to, data"),
    ],
)
def test_an_unknown_field_in_a_trigger_call_is_refused_not_ignored(product_client, workflow, body, field, hint):
    """A typo such as `datta` used to start runs without their data."""
    response = _trigger(product_client, body)
    assert response.status_code == 400
    reason = _fields(response)[field]
    assert reason.startswith("Unknown field") and hint in reason
    assert not TriggerRequest.objects.exists()


def test_an_unknown_field_is_reported_with_the_other_errors(product_client, workflow):
    response = _trigger(product_client, {"workflow": "welcome", "to": [], "datta": {}})
    assert response.status_code == 400 and {"to", "datta"} <= set(_fields(response))
