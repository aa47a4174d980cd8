"""The README's workflow examples, walked through the API as a reader would send them: every field they
document comes back from create, update, publish and `GET` as it was sent."""

import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

from apps.core.durations import duration_seconds
from tests import factories

pytestmark = pytest.mark.django_db

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
# `curl ... /api/v1/workflows ... -d '<body>'`: the body runs to the quote that closes the shell word, the
# README's `"'$WEBHOOK_ID'"` splices aside.
_CREATE = re.compile(r"curl -s -X POST \$ROWBELL_URL/api/v1/workflows -H [^\n]*\\\n[^\n]*-d '(.*?)'(?=\n|$)", re.S)
_SPLICE = re.compile(r"\"'\$[A-Z_]+'\"")


def readme_workflows() -> list[str]:
    """The bodies of the README's `POST /api/v1/workflows` examples, as written (shell splices and all)."""
    return [m.group(1) for m in _CREATE.finditer(README)]


def readme_fragments(field: str) -> list[str]:
    """Every `"<field>": {...}` example the README gives inline for a workflow's top-level field."""
    return re.findall(rf'`"{field}": (\{{[^`]*\}})`', README)


def _body(text: str, *, endpoint_id: str, connection_id: str) -> dict:
    text = _SPLICE.sub(f'"{endpoint_id}"', text)
    text = text.replace("<endpoint id>", endpoint_id).replace('"<id>"', f'"{connection_id}"')
    return json.loads(text, parse_float=Decimal)


def _seconds(value):
    """A duration as the API gives it back (seconds), for a value that the README wrote as one."""
    if isinstance(value, str) and re.fullmatch(r"(?:\d+d)?(?:\d+h)?(?:\d+m)?(?:\d+s)?", value) and value:
        return duration_seconds(value)
    return value


def _missing(sent, got, path="") -> list[str]:
    """Where `got` lacks or changed what `sent` holds (a key `got` adds, such as a step's id, is fine)."""
    if isinstance(sent, dict):
        if not isinstance(got, dict):
            return [f"{path}: sent an object, got {got!r}"]
        return [m for k, v in sent.items() for m in _missing(v, got.get(k, "<absent>"), f"{path}.{k}")]
    if isinstance(sent, list):
        if not isinstance(got, list) or len(got) != len(sent):
            return [f"{path}: sent {sent!r}, got {got!r}"]
        return [m for i, (s, g) in enumerate(zip(sent, got, strict=True)) for m in _missing(s, g, f"{path}[{i}]")]
    if sent != got and _seconds(sent) != got:
        return [f"{path}: sent {sent!r}, got {got!r}"]
    return []


def _round_trip(client, body: dict) -> None:
    key = body["key"]
    created = client.post("/api/v1/workflows", body, format="json")
    assert created.status_code == 201, created.json()
    definition = {k: v for k, v in body.items() if k != "key"}
    assert _missing(definition, created.json()) == []
    assert _missing(definition, client.get(f"/api/v1/workflows/{key}").json()) == []
    # Replaced by another draft, then by the body that created it, sent again with PUT: the same again.
    other = {"trigger": {"type": "api"}, "steps": [{"type": "notify", "channel": "email", "subject": "-", "body": "-"}]}
    assert client.put(f"/api/v1/workflows/{key}", other, format="json").status_code == 200
    assert _missing(definition, client.get(f"/api/v1/workflows/{key}").json()) != []
    replaced = client.put(f"/api/v1/workflows/{key}", body, format="json")
    assert replaced.status_code == 200, replaced.json()
    assert _missing(definition, client.get(f"/api/v1/workflows/{key}").json()) == []
    published = client.post(f"/api/v1/workflows/{key}/publish")
    assert published.status_code == 201, published.json()
    stored = {k: v for k, v in definition.items() if k not in ("name", "sandbox")}
    assert _missing(stored, published.json()["definition"]) == []
    listed = {w["key"]: w for w in client.get("/api/v1/workflows").json()}
    assert _missing(definition, listed[key]) == []


@pytest.fixture
def endpoint(product, receiver):
    return factories.make_endpoint(product, receiver.url())


def test_the_readme_has_workflow_examples_to_walk():
    bodies = readme_workflows()
    assert len(bodies) >= 3
    assert any('"type": "database"' in body for body in bodies)
    assert readme_fragments("tracking"), "the README documents tracking"


def test_every_readme_workflow_example_round_trips(product_client, endpoint, connection):
    for text in readme_workflows():
        body = _body(text, endpoint_id=str(endpoint.id), connection_id=str(connection.id))
        _round_trip(product_client, body)


@pytest.mark.parametrize("field", ["tracking", "retry"])
def test_every_documented_top_level_field_round_trips(product_client, endpoint, field):
    # "tracking": {"opens": true, "clicks": true} was dropped on create and update, so no pixel, no links.
    fragments = readme_fragments(field) or re.findall(r"`(\{\"(?:schedule|max_attempts|backoff)\"[^`]*\})`", README)
    assert fragments
    for index, fragment in enumerate(fragments):
        body = {
            "key": f"{field}-{index}",
            "trigger": {"type": "api"},
            "steps": [factories.email_step(html='<a href="https://example.com/">Go</a>')],
            field: json.loads(fragment),
        }
        _round_trip(product_client, body)
