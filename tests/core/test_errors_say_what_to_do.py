"""Errors a first-time caller meets say what to do next, not only what went wrong."""

import importlib
import pkgutil

import pytest
from rest_framework import serializers

import apps

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("path", "body", "content_type"),
    [
        ("/api/v1/trigger", "workflow=welcome&to=ada", "application/x-www-form-urlencoded"),
        ("/api/v1/workflows", "key=w", "multipart/form-data; boundary=x"),
        ("/api/v1/trigger", '{"workflow": "welcome"}', "text/plain"),
    ],
)
def test_a_body_that_is_not_json_is_told_to_be_sent_as_json_with_its_header(product_client, path, body, content_type):
    response = product_client.generic("POST", path, body, content_type=content_type)
    assert response.status_code == 415
    error = response.json()["error"]
    sent = content_type.split(";")[0] if content_type.startswith("multipart") else content_type
    assert error["code"] == "unsupported_media_type"
    assert sent in error["message"]
    assert 'send the body as JSON, with the header "Content-Type: application/json"' in error["message"]
    assert error["fields"][0]["field"] == "Content-Type"


def test_a_body_without_a_content_type_is_told_which_header_to_send(product_client):
    response = product_client.generic("POST", "/api/v1/trigger", b'{"workflow": "welcome"}', content_type="")
    assert response.status_code == 415
    assert '"Content-Type: application/json"' in response.json()["error"]["message"]


def _api_serializers() -> list[type[serializers.Serializer]]:
    for module in pkgutil.walk_packages(apps.__path__, "apps."):
        if module.name.rsplit(".", 1)[-1] in {"apis", "api", "serializers"} or ".channels" in module.name:
            importlib.import_module(module.name)
    found, queue = [], [serializers.Serializer]
    while queue:
        cls = queue.pop()
        queue.extend(cls.__subclasses__())
        if cls.__module__.startswith("apps."):
            found.append(cls)
    return found


def _choice_fields(serializer_class):
    for name, field in serializer_class._declared_fields.items():
        inner = getattr(field, "child", None)
        for candidate in (field, inner):
            if isinstance(candidate, serializers.ChoiceField):
                yield name, candidate


def test_every_choice_an_api_reads_lists_the_valid_choices_when_refused():
    # "urgent" is not a valid choice. → and which ones are? Every choice field of every API serializer
    # must answer with the list (apps.core.fields.ChoiceField), so that none is added without it.
    checked, bare = 0, []
    for serializer_class in _api_serializers():
        for name, field in _choice_fields(serializer_class):
            checked += 1
            message = field.error_messages["invalid_choice"].format(input="urgent")
            if not all(f'"{choice}"' in message for choice in field.choices):
                bare.append(f"{serializer_class.__module__}.{serializer_class.__name__}.{name}: {message}")
    assert checked >= 8  # the walk reached the API modules
    assert bare == []


def test_a_refused_priority_lists_the_priorities(product_client):
    response = product_client.post(
        "/api/v1/trigger", {"workflow": "welcome", "to": [{"id": "1"}], "priority": "urgent"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == [
        {"field": "priority", "reason": '"urgent" is not a valid choice; use one of "high", "normal", "low".'}
    ]


def test_an_unknown_channel_filter_lists_the_channels_instead_of_answering_no_figures(product_client):
    response = product_client.get("/api/v1/metrics?channel=mail")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == [
        {
            "field": "channel",
            "reason": '"mail" is not a valid choice; use one of "chat", "email", "push", "sms", "webhook".',
        }
    ]
    assert product_client.get("/api/v1/metrics?channel=email").status_code == 200


def test_a_body_that_is_not_valid_json_says_where_and_what_to_look_for(product_client):
    response = product_client.generic(
        "POST", "/api/v1/trigger", b'{"workflow": "welcome",}', content_type="application/json"
    )
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith("JSON parse error - ") and "(char 23)" in message
    assert "The body must be valid JSON (RFC 8259)" in message


def test_a_workflow_that_does_not_exist_says_how_to_create_one(product_client):
    response = product_client.put(
        "/api/v1/workflows/nope",
        {"trigger": {"type": "api"}, "steps": [{"type": "wait", "duration": 1}]},
        format="json",
    )
    assert response.status_code == 404
    assert response.json()["error"]["message"] == (
        "No workflow has the key 'nope' here: GET /api/v1/workflows lists them, POST /api/v1/workflows creates one."
    )


@pytest.mark.parametrize("debug", [True, False])
def test_an_api_path_that_names_no_endpoint_answers_json_and_says_why(product_client, settings, debug):
    settings.DEBUG = debug  # Django's debug 404 page is HTML listing every URL pattern
    response = product_client.get("/api/v1/workflows/")
    assert response.status_code == 404 and response["Content-Type"] == "application/json"
    assert response.json()["error"] == {
        "code": "not_found",
        "message": "No endpoint at /api/v1/workflows/: API paths take no trailing slash; use /api/v1/workflows.",
    }
    response = product_client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert (
        response.json()["error"]["message"]
        == "No endpoint at /api/v1/nothing-here: the API reference is at /api/docs/."
    )


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_a_write_to_no_endpoint_is_a_json_404_not_a_csrf_page(product_client, method):
    product_client.handler.enforce_csrf_checks = True  # as a real client meets Django's CSRF check
    response = product_client.generic(method, "/api/v1/connections/not-an-id", "{}", content_type="application/json")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
