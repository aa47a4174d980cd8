"""A bounded schemathesis run over the published OpenAPI description.

Every operation is called with generated input (valid and invalid) under a platform, a product and an
organization key. Each answer must not be a server error, must carry a status code the description
lists for that operation, and must match the documented body. The run is derandomized so that CI is
repeatable; ROWBELL_FUZZ_EXAMPLES widens it (e.g. `make fuzz` runs more, with a random seed).
"""

from __future__ import annotations

import functools
import json
import os
import re

import pytest
import schemathesis
from django.core import signals
from django.core.management import call_command
from django.db import close_old_connections
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import ignored_auth, positive_data_acceptance

from apps.tenants.services import organization_create, platform_key_create
from config.wsgi import application
from tests import factories


@functools.lru_cache(maxsize=1)
def _published_schema() -> dict:
    from io import StringIO

    out = StringIO()
    call_command("spectacular", "--format", "openapi-json", stdout=out)
    return json.loads(out.getvalue())


EXAMPLES = int(os.environ.get("ROWBELL_FUZZ_EXAMPLES", "3"))
RANDOM = os.environ.get("ROWBELL_FUZZ_RANDOM") == "1"

schema = schemathesis.openapi.from_dict(_published_schema())
schema.app = application


@pytest.fixture
def unthrottled(settings):
    """The fuzz run and the key checks call far more than a product or a client address may: the throttles
    have tests of their own (tests/tenants/test_throttles.py)."""
    settings.ROWBELL_API_RATE = settings.ROWBELL_TRIGGER_RATE = "100000000/min"
    settings.ROWBELL_AUTH_FAILURES_PER_IP = settings.ROWBELL_AUTH_FAILURES_PER_PREFIX = "100000000/min"


@pytest.fixture
def keys(db, unthrottled):
    # Calls go straight to the WSGI application, not through Django's test client, which is what stops
    # Django from closing the test's database connection (and its transaction) at the end of each request.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    _, platform = platform_key_create(name="fuzz")
    product, product_key = factories.make_product(name="Fuzz")
    _, organization_key = organization_create(product=product, name="Fuzz org", actor="test")
    factories.make_workflow(product, key="welcome", steps=[factories.email_step()])
    yield {"platform": platform, "product": product_key, "organization": organization_key}
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@schema.parametrize()
@hypothesis_settings(
    max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM, database=None, suppress_health_check=list(HealthCheck)
)
def test_no_operation_answers_a_server_error_or_breaks_its_schema(case, keys):
    for key in keys.values():
        # Input the description allows may still be refused for what it means (a workflow key that does not
        # exist, a database that cannot be reached): schema-valid input need not be accepted.
        # Whether every operation refuses a missing or wrong key is asserted below, for all of them at once:
        # schemathesis's own probe for it re-sends the generated case, whose path may not route anywhere.
        case.call_and_validate(
            headers={"Authorization": f"Api-Key {key}"}, excluded_checks=[positive_data_acceptance, ignored_auth]
        )


def _path_value(match) -> str:
    """A value each path parameter's converter accepts, so that the request reaches its view."""
    name = match.group(1)
    if name == "run_id":
        return "1"
    if name.endswith("_id") and name != "message_id":
        return "6f1c1a52-3c1e-4b1e-9a52-3c1e4b1e9a52"
    return "x"


def _operations():
    for path, methods in _published_schema()["paths"].items():
        for method, operation in methods.items():
            if operation.get("security"):
                yield method, path


@pytest.mark.django_db
@pytest.mark.parametrize("authorization", [None, "Api-Key abcdefgh.wrongsecretwrongsecret", "Bearer x", "Api-Key"])
def test_every_operation_that_needs_a_key_refuses_a_missing_or_wrong_one(client, unthrottled, authorization):
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    operations = list(_operations())
    assert len(operations) > 40
    for method, path in operations:
        url = re.sub(r"\{(\w+)\}", _path_value, path)
        response = getattr(client, method)(url, content_type="application/json", **headers)
        assert response.status_code == 401, (method, path, response.status_code)
        assert response.json()["error"]["code"] in ("authentication_failed", "not_authenticated"), (method, path)
