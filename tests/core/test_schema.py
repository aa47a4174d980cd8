from io import StringIO

import pytest
from django.core.management import call_command


def test_the_openapi_schema_generates_without_warnings_and_lists_every_endpoint(tmp_path):
    target = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target), stderr=StringIO())
    schema = target.read_text()
    for path in ("/api/v1/trigger", "/api/v1/requests/{request_id}", "/api/v1/products", "/api/v1/organizations",
                 "/api/v1/webhooks", "/api/v1/workflows/{key}/publish", "/api/v1/audit", "/api/v1/keys"):
        assert f"  {path}:" in schema, path
    assert "ApiKey" in schema


@pytest.mark.django_db
def test_the_docs_page_is_served(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200 and b"swagger" in response.content.lower()
