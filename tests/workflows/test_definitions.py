import pytest

from apps.workflows.models import WorkflowVersion
from tests import factories
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def _fields(response):
    return {f["field"]: f["reason"] for f in response.json()["error"]["fields"]}


def test_a_workflow_is_created_as_a_draft_with_ids_assigned(product_client):
    response = product_client.post("/api/v1/workflows", {
        "key": "welcome",
        "steps": [{"type": "notify", "channel": "email", "subject": "Hi", "body": "Hello {{ recipient.id }}"}],
    }, format="json")
    assert response.status_code == 201
    body = response.json()
    assert body["published_version"] is None and body["trigger"] == {"type": "api"}
    assert body["steps"][0]["id"] == "step-1" and body["steps"][0]["to"] == "{{ recipient.email }}"


@pytest.mark.parametrize("steps, field, reason_part", [
    ([{"type": "notify", "channel": "email", "body": "x"}], "steps[0].subject", "required"),
    ([{"type": "notify", "channel": "fax"}], "steps[0].channel", "Must be one of"),
    ([{"type": "teleport"}], "steps[0].type", "Must be one of"),
    ([{"type": "notify", "channel": "email", "subject": "{{ oops", "body": "x"}], "steps[0].subject",
     "syntax error"),
    ([{"type": "notify", "channel": "email", "subject": "s", "body": "b", "cc": "x"}], "steps[0].cc", "Unknown"),
    ([{"type": "notify", "channel": "webhook", "webhook": "00000000-0000-0000-0000-000000000000"}],
     "steps[0].webhook", "No webhook endpoint"),
    ([{"id": "a", "type": "notify", "channel": "email", "subject": "s", "body": "b"},
      {"id": "a", "type": "notify", "channel": "email", "subject": "s", "body": "b"}], "steps[1].id", "Duplicate"),
    ([], "steps", "at least one step"),
    ([{"type": {}}], "steps[0].type", "Must be one of"),
    ([{"type": "notify", "channel": ["email"]}], "steps[0].channel", "Must be one of"),
    ("nope", "steps", "list"),
])
def test_definition_errors_point_at_the_exact_step_and_field(product_client, steps, field, reason_part):
    response = product_client.post("/api/v1/workflows", {"key": "w", "steps": steps}, format="json")
    assert response.status_code == 400
    fields = _fields(response)
    assert field in fields, fields
    assert reason_part.lower() in fields[field].lower()


def test_a_webhook_of_another_product_cannot_be_used(product_client, receiver):
    other, _ = factories.make_product("Other")
    foreign = factories.make_endpoint(other, receiver.url())
    response = product_client.post("/api/v1/workflows", {"key": "w", "steps": [factories.webhook_step(foreign)]},
                                   format="json")
    assert response.status_code == 400 and "steps[0].webhook" in _fields(response)


def test_duplicate_key_is_a_conflict(product_client):
    body = {"key": "w", "steps": [factories.email_step()]}
    assert product_client.post("/api/v1/workflows", body, format="json").status_code == 201
    response = product_client.post("/api/v1/workflows", body, format="json")
    assert response.status_code == 409 and _fields(response) == {"key": "A workflow with key 'w' already exists."}


def test_publish_freezes_versions_and_drafts_do_not_change_them(product_client):
    product_client.post("/api/v1/workflows", {"key": "w", "steps": [factories.email_step(subject="v1")]},
                        format="json")
    first = product_client.post("/api/v1/workflows/w/publish")
    assert first.status_code == 201 and first.json()["version"] == 1
    product_client.put("/api/v1/workflows/w", {"steps": [factories.email_step(subject="v2")]}, format="json")
    assert product_client.get("/api/v1/workflows/w").json()["published_version"] == 1
    assert WorkflowVersion.objects.get(version=1).definition["steps"][0]["subject"] == "v1"
    second = product_client.post("/api/v1/workflows/w/publish").json()
    assert second["version"] == 2 and second["definition"]["steps"][0]["subject"] == "v2"
    versions = product_client.get("/api/v1/workflows/w/versions").json()
    assert [v["version"] for v in versions] == [2, 1]


def test_organization_keys_read_workflows_but_cannot_change_them(product_with_key):
    product, key = product_with_key
    client_for(key).post("/api/v1/workflows", {"key": "w", "steps": [factories.email_step()]}, format="json")
    org_key = client_for(key).post("/api/v1/organizations", {"name": "o"}, format="json").json()["api_key"]
    org = client_for(org_key)
    assert org.get("/api/v1/workflows/w").status_code == 200
    assert org.post("/api/v1/workflows/w/publish").status_code == 403
    assert org.put("/api/v1/workflows/w", {"steps": [factories.email_step()]}, format="json").status_code == 403


def test_other_products_workflows_are_not_found(product_client):
    other, other_key = factories.make_product("Other")
    factories.make_workflow(other, key="secret", steps=[factories.email_step()])
    assert product_client.get("/api/v1/workflows/secret").status_code == 404
    assert product_client.post("/api/v1/workflows/secret/publish").status_code == 404
