"""The definition format as a user meets it: unknown fields refused at every level, template variables checked
when a workflow is saved and published, every preview error reported, and the format's JSON Schema served and
in the OpenAPI description."""

import json

import pytest
from jsonschema import Draft202012Validator

from apps.workflows.models import Workflow
from tests import factories
from tests.conftest import client_for

pytestmark = pytest.mark.django_db

MAIL = {"type": "notify", "channel": "email", "subject": "s", "body": "b"}
WHEN = {"column": "data.x", "op": "eq", "value": 1}


def _fields(response) -> dict:
    return {f["field"]: f["reason"] for f in response.json()["error"].get("fields", [])}


def _create(client, **body):
    return client.post("/api/v1/workflows", {"key": "w", **body}, format="json")


# --- Unknown fields -------------------------------------------------------------------------------------


def test_a_misspelt_sandbox_is_refused_and_nothing_is_created(product_client):
    """`"sandbx": true` used to create a workflow that really sent."""
    response = _create(product_client, sandbx=True, steps=[MAIL])
    assert response.status_code == 400
    assert _fields(response) == {"sandbx": "Unknown field for a workflow. Did you mean 'sandbox'?"}
    assert not Workflow.objects.exists()


@pytest.mark.parametrize(
    "body, field, says",
    [
        (
            {"steps": [MAIL], "trigger": {"type": "api", "connection": "x"}},
            "trigger.connection",
            "Unknown field for an 'api' trigger",
        ),
        (
            {
                "steps": [MAIL],
                "trigger": {
                    "type": "database",
                    "connection": "x",
                    "table": "t",
                    "events": ["row.created"],
                    "colums": ["a"],
                },
            },
            "trigger.colums",
            "Did you mean 'columns'?",
        ),
        ({"steps": [{**MAIL, "subjet": "x"}]}, "steps[0].subjet", "Did you mean 'subject'?"),
        (
            {"steps": [{"type": "wait", "duration": "1h", "offset": "1m"}]},
            "steps[0].offset",
            "Unknown field for a wait with a duration",
        ),
        (
            {"steps": [{"type": "branch", "branches": [{"when": WHEN, "step": [MAIL]}]}]},
            "steps[0].branches[0].step",
            "Did you mean 'steps'?",
        ),
        (
            {"steps": [{"type": "branch", "branches": [{"when": {**WHEN, "vale": 1}, "steps": [MAIL]}]}]},
            "steps[0].branches[0].when.vale",
            "Did you mean 'value'?",
        ),
        (
            {"steps": [{"type": "branch", "branches": [{"when": WHEN, "steps": [{**MAIL, "tittle": "t"}]}]}]},
            "steps[0].branches[0].steps[0].tittle",
            "Unknown field for an 'email' notify step",
        ),
        ({"steps": [MAIL], "retry": {"max_attempt": 3}}, "retry.max_attempt", "Did you mean 'max_attempts'?"),
        ({"steps": [MAIL], "tracking": {"open": True}}, "tracking.open", "Did you mean 'opens'?"),
    ],
)
def test_unknown_fields_are_refused_at_every_level_with_a_suggestion(product_client, body, field, says):
    response = _create(product_client, **body)
    assert response.status_code == 400
    assert says in _fields(response)[field]
    assert not Workflow.objects.exists()


def test_unknown_fields_are_refused_when_a_draft_is_replaced(product_client):
    assert _create(product_client, steps=[MAIL]).status_code == 201
    response = product_client.put("/api/v1/workflows/w", {"steps": [MAIL], "nmae": "x", "sandbox": True}, format="json")
    assert response.status_code == 400 and "Did you mean 'name'?" in _fields(response)["nmae"]
    assert Workflow.objects.get(key="w").sandbox is False


def test_every_documented_field_is_taken(product_client):
    """key, name, sandbox, trigger, steps, retry, tracking: as the README shows them."""
    response = _create(
        product_client,
        name="Welcome",
        sandbox=True,
        trigger={"type": "api"},
        retry={"max_attempts": 3, "backoff": "30s", "max_backoff": "1h"},
        tracking={"opens": True, "clicks": False},
        steps=[{"id": "mail", **MAIL, "to": "{{ recipient.email }}", "html": "<p>{{ data.x }}</p>"}],
    )
    assert response.status_code == 201, response.json()
    workflow = Workflow.objects.get(key="w")
    assert workflow.name == "Welcome" and workflow.sandbox is True
    assert workflow.draft["tracking"] == {"opens": True, "clicks": False}
    assert workflow.draft["retry"] == {"max_attempts": 3, "backoff": 30, "max_backoff": 3600}


@pytest.mark.parametrize("body", [[MAIL], "steps", None, {"key": "w", "steps": [MAIL], "name": 7}])
def test_a_body_of_the_wrong_shape_is_a_400_not_a_crash(product_client, body):
    response = product_client.post("/api/v1/workflows", body, format="json")
    assert response.status_code == 400


@pytest.mark.parametrize("depth", [12, 150])
def test_branches_nested_far_too_deep_are_a_400_not_a_crash(product_client, depth):
    branch = '{"type": "branch", "branches": [{"when": {"column": "data.x", "op": "is_null"}, "steps": ['
    body = '{"key": "w", "steps": [' + branch * depth + json.dumps(MAIL) + "]}]}" * depth + "]}"
    response = product_client.post("/api/v1/workflows", body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert any("nest" in reason.lower() for reason in _fields(response).values())


def test_structure_errors_are_all_reported_at_once(product_client):
    response = _create(
        product_client, steps=[{**MAIL, "subject": 3}, {"type": "wait", "duration": "soon"}], retry={"max_attempts": 0}
    )
    assert response.status_code == 400
    assert _fields(response) == {
        "steps[0].subject": "Must be a string, not a number.",
        "steps[1].duration": "A duration such as '90s', '15m', '2h', '1d12h' (at most 366 days).",
        "retry.max_attempts": "An integer from 1 to 25.",
    }


def test_the_preview_and_unpublish_bodies_refuse_unknown_fields(product_client):
    _create(product_client, steps=[MAIL])
    preview = product_client.post("/api/v1/workflows/w/preview", {"dat": {}}, format="json")
    assert preview.status_code == 400 and "Did you mean 'data'?" in _fields(preview)["dat"]
    unpublish = product_client.post("/api/v1/workflows/w/unpublish", {"cancel": True}, format="json")
    assert unpublish.status_code == 400 and "Did you mean 'cancel_runs'?" in _fields(unpublish)["cancel"]


# --- Template variables -----------------------------------------------------------------------------------


def test_a_misspelt_variable_is_refused_when_saving(product_client):
    """`{{ recipent.name }}` used to pass create and publish, and fail every run."""
    response = _create(product_client, steps=[MAIL, {**MAIL, "subject": "Hi {{ recipent.name }}"}])
    assert response.status_code == 400
    reason = _fields(response)["steps[1].subject"]
    assert reason.startswith("Unknown variable 'recipent'. Did you mean 'recipient'?")
    assert "Templates here can use: data, recipient, workflow, request_id, run_id, timestamp, steps, step." in reason
    assert not Workflow.objects.exists()


def test_a_misspelt_variable_is_refused_when_replacing_the_draft(product_client):
    _create(product_client, steps=[MAIL])
    response = product_client.put(
        "/api/v1/workflows/w", {"steps": [{**MAIL, "body": "{{ dta.order }}"}]}, format="json"
    )
    assert response.status_code == 400 and "Unknown variable 'dta'" in _fields(response)["steps[0].body"]
    assert Workflow.objects.get(key="w").draft["steps"][0]["body"] == "b"


def test_publishing_checks_the_variables_of_a_draft_saved_before_the_check(product_client):
    _create(product_client, steps=[MAIL])
    workflow = Workflow.objects.get(key="w")
    workflow.draft["steps"][0]["subject"] = "{{ recipent.name }}"  # as a draft saved by an earlier version
    workflow.save(update_fields=["draft"])
    response = product_client.post("/api/v1/workflows/w/publish")
    assert response.status_code == 400 and "'recipent'" in _fields(response)["steps[0].subject"]
    assert Workflow.objects.get(key="w").published_version is None


@pytest.mark.parametrize(
    "steps, field, says",
    [
        (
            [{**MAIL, "body": "{{ row.total }}"}],
            "steps[0].body",
            "Unknown variable 'row': only workflows with a database trigger have it.",
        ),
        (
            [{**MAIL, "body": "{{ batch.count }}"}, {"type": "batch", "key": "data.c", "window": "1m"}],
            "steps[0].body",
            "Unknown variable 'batch': it exists only after a batch step.",
        ),
        (
            [{"id": "a", **MAIL, "body": "{{ steps.b.status }}"}, {"id": "b", **MAIL}],
            "steps[0].body",
            "'steps.b' names no step that runs before this one. No step runs before it.",
        ),
        (
            [{"id": "first", **MAIL}, {**MAIL, "body": "{{ steps['frist'].status }}"}],
            "steps[1].body",
            "Did you mean 'steps.first'? Steps that run before it: first.",
        ),
        (
            [
                {
                    "type": "branch",
                    "branches": [{"when": WHEN, "steps": [{"id": "yes", **MAIL}]}],
                    "otherwise": [{**MAIL, "body": "{{ steps.yes.status }}"}],
                }
            ],
            "steps[0].otherwise[0].body",
            "'steps.yes' names no step that runs before this one.",
        ),
        (
            [{**MAIL, "html": "{{ data.a }}{{ unknown }}", "body": "{{ nope }}"}],
            "steps[0].html",
            "Unknown variable 'unknown'.",
        ),
    ],
)
def test_variables_are_checked_against_the_trigger_and_the_steps_before(product_client, steps, field, says):
    response = _create(product_client, steps=steps)
    assert response.status_code == 400
    assert says in _fields(response)[field], _fields(response)


@pytest.mark.parametrize(
    "template",
    [
        "{{ data.anything.at.all }} {{ recipient.my_own_property }} {{ workflow.key }} {{ request_id }} {{ run_id }}",
        "{{ timestamp }} {{ step }} {% set x = 1 %}{{ x }}{% for i in range(2) %}{{ loop.index }}{{ i }}{% endfor %}",
        "{% macro m(a) %}{{ a }}{% endmacro %}{{ m(1) }} {{ lipsum(1) }} {{ namespace(a=1).a }} {{ dict(a=1) }}",
        "{% set steps = {'x': 1} %}{{ steps.x }}",
    ],
)
def test_what_a_run_has_is_accepted(product_client, template):
    assert _create(product_client, steps=[{**MAIL, "body": template}]).status_code == 201


def test_step_outputs_are_there_after_their_step_and_batch_after_a_batch(product_client):
    steps = [
        {"id": "hook", **MAIL},
        {
            "id": "route",
            "type": "branch",
            "branches": [
                {
                    "when": WHEN,
                    "steps": [
                        {"id": "inner", **MAIL, "body": "{{ steps.route.branch }} {{ steps.hook }}"},
                        {"id": "digest", "type": "batch", "key": "data.c", "window": "1m"},
                    ],
                }
            ],
        },
        {"id": "after", **MAIL, "body": "{{ steps.inner.status }} {{ steps['digest'] }} {{ batch.count }}"},
    ]
    response = _create(product_client, steps=steps)
    assert response.status_code == 201, response.json()


def test_variable_errors_come_with_the_other_errors_of_the_same_pass(product_client):
    response = _create(
        product_client,
        steps=[
            {"type": "notify", "channel": "webhook", "webhook": "00000000-0000-0000-0000-000000000000"},
            {**MAIL, "subject": "{{ recipent }}"},
        ],
    )
    assert response.status_code == 400 and {"steps[0].webhook", "steps[1].subject"} <= set(_fields(response))


# --- Preview ------------------------------------------------------------------------------------------------


def test_preview_reports_every_error_of_every_step(product_client):
    _create(
        product_client,
        steps=[
            {"id": "one", **MAIL, "subject": "{{ data.a }}", "body": "{{ data.b }}", "html": "ok"},
            {"id": "two", "type": "notify", "channel": "sms", "text": "{{ data.c }}"},
        ],
    )
    response = product_client.post(
        "/api/v1/workflows/w/preview", {"recipient": {"id": "u", "email": "u@example.com"}}, format="json"
    )
    assert response.status_code == 200
    steps = {s["step"]: s for s in response.json()["steps"]}
    assert steps["one"]["error"] == "Missing variable 'a'."
    assert steps["one"]["errors"] == [
        {"field": "steps[0].subject", "reason": "Missing variable 'a'."},
        {"field": "steps[0].body", "reason": "Missing variable 'b'."},
    ]
    # No phone: the recipient is skipped, and the text that would fail for one with a phone is still shown.
    assert steps["two"]["skipped"] and "error" not in steps["two"]
    assert steps["two"]["errors"] == [{"field": "steps[1].text", "reason": "Missing variable 'c'."}]


def test_preview_names_every_template_that_trips_a_bound(product, product_client, settings):
    settings.ROWBELL_TEMPLATE_RENDER_SECONDS = 0.3
    heavy = "{{ ('a' * data.n)|length }}"
    factories.make_workflow(
        product,
        key="w",
        publish=False,
        steps=[factories.email_step("a", body=heavy), factories.email_step("b", subject=heavy)],
    )
    response = product_client.post(
        "/api/v1/workflows/w/preview",
        {"data": {"n": 10**9}, "recipient": {"id": "u", "email": "u@example.com", "name": "U"}},
        format="json",
    )
    assert response.status_code == 400
    assert {"steps[0].body", "steps[1].subject"} <= set(_fields(response))


# --- The format's JSON Schema and the OpenAPI description ---------------------------------------------------


README_WORKFLOW = {
    "key": "welcome",
    "trigger": {"type": "api"},
    "steps": [
        {"id": "hook", "type": "notify", "channel": "webhook", "webhook": "6f1c1a52-3c1e-4b1e-9a52-3c1e4b1e9a52"},
        {
            "id": "mail",
            "type": "notify",
            "channel": "email",
            "subject": "Welcome, {{ recipient.name }}",
            "body": "Your plan: {{ data.plan }}",
        },
        {"type": "wait", "duration": "1h30m"},
        {
            "type": "branch",
            "branches": [
                {
                    "when": {"column": "data.plan", "op": "in", "value": ["pro", "team"]},
                    "steps": [{"type": "notify", "channel": "sms", "text": "Hi"}],
                }
            ],
        },
        {"type": "batch", "key": "data.customer_id", "window": "10m", "max_items": 1000},
    ],
    "retry": {"max_attempts": 8, "backoff": "10s", "max_backoff": "6h"},
    "tracking": {"opens": True, "clicks": True},
}


def test_the_json_schema_is_served_without_a_key_and_describes_the_format(client):
    response = client.get("/api/v1/workflows/schema.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    assert not list(validator.iter_errors(README_WORKFLOW))
    typo = {**README_WORKFLOW, "sandbx": True, "steps": [{**README_WORKFLOW["steps"][1], "subjet": "x"}]}
    assert len(list(validator.iter_errors(typo))) >= 2
    assert set(schema["$defs"]["EmailNotify"]["required"]) == {"type", "channel", "subject", "body"}


def test_what_the_schema_accepts_the_api_accepts(product_client, receiver, product):
    endpoint = factories.make_endpoint(product, receiver.url())
    body = {
        **README_WORKFLOW,
        "steps": [{**README_WORKFLOW["steps"][0], "webhook": str(endpoint.id)}, *README_WORKFLOW["steps"][1:]],
    }
    assert product_client.post("/api/v1/workflows", body, format="json").status_code == 201


def test_the_openapi_description_types_the_steps(client):
    schema = client.get("/api/schema/?format=json").json()
    components = schema["components"]["schemas"]
    body = schema["paths"]["/api/v1/workflows"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    create = components[body["$ref"].rsplit("/", 1)[1]]
    assert create["additionalProperties"] is False and "key" in create["required"]
    step_refs = str(create["properties"]["steps"]["items"])
    for name in ("EmailNotify", "WebhookNotify", "WaitUntil", "Branch", "Batch"):
        assert f"#/components/schemas/{name}" in step_refs
    assert components["EmailNotify"]["properties"]["subject"]["maxLength"] == 2000
    answer = components["WorkflowOutput"]["properties"]["steps"]
    assert "#/components/schemas/EmailNotify" in str(answer)


def test_organization_keys_still_cannot_create_workflows(product_with_key):
    _, key = product_with_key
    org_key = client_for(key).post("/api/v1/organizations", {"name": "o"}, format="json").json()["api_key"]
    assert (
        client_for(org_key).post("/api/v1/workflows", {"key": "w", "steps": [MAIL]}, format="json").status_code == 403
    )
