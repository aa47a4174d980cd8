import pytest

from apps.audit.models import AuditEvent
from apps.workflows.models import WorkflowVersion
from tests import factories
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def _fields(response):
    return {f["field"]: f["reason"] for f in response.json()["error"]["fields"]}


def test_a_workflow_is_created_as_a_draft_with_ids_assigned(product_client):
    response = product_client.post(
        "/api/v1/workflows",
        {
            "key": "welcome",
            "steps": [{"type": "notify", "channel": "email", "subject": "Hi", "body": "Hello {{ recipient.id }}"}],
        },
        format="json",
    )
    assert response.status_code == 201
    body = response.json()
    assert body["published_version"] is None and body["trigger"] == {"type": "api"}
    assert body["steps"][0]["id"] == "step-1" and body["steps"][0]["to"] == "{{ recipient.email }}"


@pytest.mark.parametrize(
    "steps, field, reason_part",
    [
        ([{"type": "notify", "channel": "email", "body": "x"}], "steps[0].subject", "required"),
        ([{"type": "notify", "channel": "fax"}], "steps[0].channel", "Must be one of"),
        ([{"type": "teleport"}], "steps[0].type", "Must be one of"),
        (
            [{"type": "notify", "channel": "email", "subject": "{{ oops", "body": "x"}],
            "steps[0].subject",
            "syntax error",
        ),
        ([{"type": "notify", "channel": "email", "subject": "s", "body": "b", "cc": "x"}], "steps[0].cc", "Unknown"),
        (
            [{"type": "notify", "channel": "webhook", "webhook": "00000000-0000-0000-0000-000000000000"}],
            "steps[0].webhook",
            "No webhook endpoint",
        ),
        (
            [
                {"id": "a", "type": "notify", "channel": "email", "subject": "s", "body": "b"},
                {"id": "a", "type": "notify", "channel": "email", "subject": "s", "body": "b"},
            ],
            "steps[1].id",
            "Duplicate",
        ),
        ([], "steps", "at least one step"),
        ([{"type": {}}], "steps[0].type", "Must be one of"),
        ([{"type": "notify", "channel": ["email"]}], "steps[0].channel", "Must be one of"),
        ("nope", "steps", "list"),
    ],
)
def test_definition_errors_point_at_the_exact_step_and_field(product_client, steps, field, reason_part):
    response = product_client.post("/api/v1/workflows", {"key": "w", "steps": steps}, format="json")
    assert response.status_code == 400
    fields = _fields(response)
    assert field in fields, fields
    assert reason_part.lower() in fields[field].lower()


def test_a_webhook_of_another_product_cannot_be_used(product_client, receiver):
    other, _ = factories.make_product("Other")
    foreign = factories.make_endpoint(other, receiver.url())
    response = product_client.post(
        "/api/v1/workflows", {"key": "w", "steps": [factories.webhook_step(foreign)]}, format="json"
    )
    assert response.status_code == 400 and "steps[0].webhook" in _fields(response)


def test_a_key_of_the_longest_length_is_created_published_and_audited(product_client):
    key = "k" * 100
    body = {"key": key, "steps": [factories.email_step()]}
    assert product_client.post("/api/v1/workflows", body, format="json").status_code == 201
    assert product_client.post(f"/api/v1/workflows/{key}/publish").status_code == 201
    assert AuditEvent.objects.filter(target_id=key, action="workflow.published").exists()


def test_duplicate_key_is_a_conflict_that_says_how_to_update_it(product_client):
    body = {"key": "w", "steps": [factories.email_step()]}
    assert product_client.post("/api/v1/workflows", body, format="json").status_code == 201
    response = product_client.post("/api/v1/workflows", body, format="json")
    assert response.status_code == 409
    assert _fields(response) == {
        "key": "A workflow with key 'w' already exists. To change it, send PUT /api/v1/workflows/w (the draft is "
        "replaced; publish it to use it); to keep both, choose another key."
    }
    # What it says works: the same body, PUT to the named path, replaces the draft.
    body["steps"] = [factories.email_step(subject="Changed")]
    assert product_client.put("/api/v1/workflows/w", body, format="json").status_code == 200


def test_a_put_cannot_change_the_key(product_client):
    body = {"key": "w", "steps": [factories.email_step()]}
    assert product_client.post("/api/v1/workflows", body, format="json").status_code == 201
    response = product_client.put("/api/v1/workflows/w", {**body, "key": "w2"}, format="json")
    assert response.status_code == 400
    assert _fields(response) == {
        "key": "A workflow's key cannot be changed: send 'w', as in the path, or leave it out."
    }
    assert product_client.get("/api/v1/workflows/w2").status_code == 404
    # With the rest of what is wrong, all at once.
    wrong = {"key": "w2", "steps": [{**factories.email_step(), "channel": "mail"}]}
    response = product_client.put("/api/v1/workflows/w", wrong, format="json")
    assert response.status_code == 400 and set(_fields(response)) == {"key", "steps[0].channel"}


def test_publish_freezes_versions_and_drafts_do_not_change_them(product_client):
    product_client.post("/api/v1/workflows", {"key": "w", "steps": [factories.email_step(subject="v1")]}, format="json")
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


MAIL = {"type": "notify", "channel": "email", "subject": "s", "body": "b"}


@pytest.mark.parametrize(
    "steps, field, reason_part",
    [
        ([{"type": "wait"}], "steps[0]", "exactly one of"),
        ([{"type": "wait", "duration": "soon"}], "steps[0].duration", "A duration"),
        ([{"type": "wait", "duration": "400d"}], "steps[0].duration", "at most 366 days"),
        ([{"type": "wait", "duration": "1h", "until": "data.at"}], "steps[0]", "exactly one of"),
        ([{"type": "wait", "until": "data.at", "offset": "yesterday"}], "steps[0].offset", "A duration"),
        ([{"type": "wait", "until": "data at"}], "steps[0].until", "dotted path"),
        (
            [{"type": "wait", "condition": {"column": "data.paid", "op": "eq", "value": True}}],
            "steps[0].timeout",
            "A duration",
        ),
        (
            [{"type": "wait", "condition": {"column": "os.environ", "op": "eq", "value": 1}, "timeout": "1h"}],
            "steps[0].condition.column",
            "dotted path starting with",
        ),
        ([{"type": "branch", "branches": []}], "steps[0].branches", "1 to 20"),
        (
            [
                {
                    "type": "branch",
                    "branches": [{"when": {"column": "data.x", "op": "like", "value": "%"}, "steps": [MAIL]}],
                }
            ],
            "steps[0].branches[0].when.op",
            "One of",
        ),
        (
            [
                {
                    "type": "branch",
                    "branches": [
                        {
                            "when": {"column": "data.x", "op": "eq", "value": 1},
                            "steps": [{**MAIL, "subject": "{{ oops"}],
                        }
                    ],
                }
            ],
            "steps[0].branches[0].steps[0].subject",
            "syntax error",
        ),
        (
            [
                {
                    "type": "branch",
                    "branches": [{"when": {"column": "data.x", "op": "eq", "value": 1}, "steps": [MAIL]}],
                    "otherwise": [{"type": "teleport"}],
                }
            ],
            "steps[0].otherwise[0].type",
            "Must be one of",
        ),
        (
            [
                {"id": "a", **MAIL},
                {
                    "type": "branch",
                    "branches": [{"when": {"column": "data.x", "op": "is_null"}, "steps": [{"id": "a", **MAIL}]}],
                },
            ],
            "steps[1].branches[0].steps[0].id",
            "Duplicate",
        ),
        ([{"type": "batch", "window": "10m"}], "steps[0].key", "dotted path"),
        ([{"type": "batch", "key": "data.customer", "window": "10m", "max_items": 0}], "steps[0].max_items", "1 to"),
    ],
)
def test_step_errors_point_at_the_exact_step_and_field(product_client, steps, field, reason_part):
    response = product_client.post("/api/v1/workflows", {"key": "w", "steps": steps}, format="json")
    assert response.status_code == 400, response.json()
    fields = _fields(response)
    assert field in fields and reason_part in fields[field], fields


@pytest.mark.parametrize(
    "retry, field",
    [
        ({"max_attempts": 0}, "retry.max_attempts"),
        ({"max_attempts": True}, "retry.max_attempts"),
        ({"backoff": "fast"}, "retry.backoff"),
        ({"backoff": "1h", "max_backoff": "1m"}, "retry.max_backoff"),
        ({"jitter": False}, "retry.jitter"),
    ],
)
def test_the_retry_policy_is_validated(product_client, retry, field):
    response = product_client.post("/api/v1/workflows", {"key": "w", "steps": [MAIL], "retry": retry}, format="json")
    assert response.status_code == 400 and field in _fields(response)


def test_a_normalized_definition_validates_again_unchanged(product_client):
    """What GET returns can be PUT back as is (durations come back in seconds)."""
    definition = {
        "retry": {"max_attempts": 3, "backoff": "30s"},
        "steps": [
            {"id": "w1", "type": "wait", "duration": "1h30m"},
            {"id": "w2", "type": "wait", "until": "data.at", "offset": "-15m"},
            {
                "id": "w3",
                "type": "wait",
                "condition": {"column": "data.ok", "op": "eq", "value": True},
                "timeout": "1d",
                "every": "5m",
            },
            {
                "id": "b",
                "type": "branch",
                "branches": [{"when": {"column": "data.x", "op": "gt", "value": 1}, "steps": [{"id": "m1", **MAIL}]}],
            },
            {"id": "d", "type": "batch", "key": "data.customer", "window": "10m"},
        ],
    }
    response = product_client.post("/api/v1/workflows", {"key": "w", **definition}, format="json")
    assert response.status_code == 201, response.json()
    created = response.json()
    assert created["steps"][0]["duration"] == 5400 and created["steps"][1]["offset"] == -900
    # No max_backoff given: the default cap, raised to the back-off if it was lower.
    assert created["retry"]["max_attempts"] == 3 and created["retry"]["backoff"] == 30
    assert created["retry"]["max_backoff"] >= 30
    again = product_client.put(
        "/api/v1/workflows/w", {"steps": created["steps"], "retry": created["retry"]}, format="json"
    )
    assert again.status_code == 200, again.json()
    assert again.json()["steps"] == created["steps"]
    assert product_client.post("/api/v1/workflows/w/publish").status_code == 201


def test_preview_renders_every_step_with_sample_data(product_client):
    product_client.post(
        "/api/v1/workflows",
        {
            "key": "w",
            "steps": [
                {
                    "id": "route",
                    "type": "branch",
                    "branches": [
                        {
                            "when": {"column": "data.total", "op": "gte", "value": 100},
                            "steps": [{"id": "big", **MAIL, "subject": "Big order {{ data.total }}"}],
                        }
                    ],
                    "otherwise": [{"id": "small", **MAIL, "html": "<p>{{ data.note }}</p>"}],
                },
                {"id": "oops", **MAIL, "subject": "{{ data.nope }}"},
            ],
        },
        format="json",
    )
    response = product_client.post(
        "/api/v1/workflows/w/preview",
        {"data": {"total": 120, "note": "<b>"}, "recipient": {"id": "u", "email": "u@example.com"}},
        format="json",
    )
    assert response.status_code == 200
    steps = {s["step"]: s for s in response.json()["steps"]}
    assert steps["route"]["taken"] == 0
    assert steps["big"]["payload"]["subject"] == "Big order 120" and steps["big"]["target"] == "u@example.com"
    assert steps["small"]["payload"]["html"] == "<p>&lt;b&gt;</p>"
    assert steps["oops"]["error"] == "Missing variable 'nope'."
    assert steps["big"]["path"] == "steps[0].branches[0].steps[0]"


@pytest.mark.parametrize("step_id", ["a" * 64 + "\n", ["x"], {"x": 1}, "a" * 65])
def test_bad_step_ids_are_refused_not_crashed_on(product_client, step_id):
    response = product_client.post("/api/v1/workflows", {"key": "w", "steps": [{"id": step_id, **MAIL}]}, format="json")
    assert response.status_code == 400 and "steps[0].id" in _fields(response)


def test_branches_nest_at_most_ten_deep(product_client):
    steps = [MAIL]
    for _ in range(12):
        steps = [{"type": "branch", "branches": [{"when": {"column": "data.x", "op": "is_null"}, "steps": steps}]}]
    response = product_client.post("/api/v1/workflows", {"key": "w", "steps": steps}, format="json")
    assert response.status_code == 400 and any("nest at most 10" in r for r in _fields(response).values())


def test_a_wait_until_without_offset_publishes(product_client):
    product_client.post(
        "/api/v1/workflows", {"key": "w", "steps": [{"type": "wait", "until": "data.at"}, MAIL]}, format="json"
    )
    assert product_client.post("/api/v1/workflows/w/publish").status_code == 201


def test_text_that_cannot_be_stored_is_refused_whatever_the_door(product):
    """The admin's form calls the same service without the API's JSON parser: a NUL or a lone surrogate
    in a definition is a validation error that names its place, never a database error."""
    from rest_framework.exceptions import ValidationError

    from apps.workflows.models import Workflow
    from apps.workflows.services import workflow_create

    for bad, reason in (("Hi\x00", "NUL character"), ("Hi \ud83d", "unpaired surrogate")):
        definition = {"trigger": {"type": "api"}, "steps": [factories.email_step(subject=bad)]}
        with pytest.raises(ValidationError) as caught:
            workflow_create(product=product, key="w", definition=definition, actor="test")
        assert reason in str(caught.value.detail["steps[0].subject"][0])
    assert not Workflow.objects.exists()
