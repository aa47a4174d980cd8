"""A bounded schemathesis run over the published OpenAPI description.

Every operation is called with generated input (valid and invalid) under a platform, a product and an
organization key. Each answer must not be a server error, must carry a status code the description
lists for that operation, and must match the documented body. The run is derandomized so that CI is
repeatable; ROWBELL_FUZZ_EXAMPLES widens it (e.g. `make fuzz` runs more, with a random seed).
"""

from __future__ import annotations

import json
import os

import pytest
import schemathesis
from schemathesis.checks import positive_data_acceptance
from django.core import signals
from django.core.management import call_command
from django.db import close_old_connections
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from apps.tenants.services import organization_create, platform_key_create
from config.wsgi import application
from tests import factories


def _published_schema() -> dict:
    from io import StringIO

    out = StringIO()
    call_command("spectacular", "--format", "openapi-json", stdout=out)
    return json.loads(out.getvalue())


EXAMPLES = int(os.environ.get("ROWBELL_FUZZ_EXAMPLES", "6"))
RANDOM = os.environ.get("ROWBELL_FUZZ_RANDOM") == "1"

schema = schemathesis.openapi.from_dict(_published_schema())
schema.app = application


@pytest.fixture
def keys(db):
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
@hypothesis_settings(max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM, database=None,
                     suppress_health_check=list(HealthCheck))
def test_no_operation_answers_a_server_error_or_breaks_its_schema(case, keys):
    for key in keys.values():
        # Input the description allows may still be refused for what it means (a workflow key that does not
        # exist, a database that cannot be reached): schema-valid input need not be accepted.
        case.call_and_validate(headers={"Authorization": f"Api-Key {key}"}, excluded_checks=[positive_data_acceptance])
