from html.parser import HTMLParser
from io import StringIO

import pytest
from django.conf import settings
from django.contrib.staticfiles import finders
from django.core.management import call_command


def test_the_openapi_schema_generates_without_warnings_and_lists_every_endpoint(tmp_path):
    target = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target), stderr=StringIO())
    schema = target.read_text()
    for path in (
        "/api/v1/trigger",
        "/api/v1/requests/{request_id}",
        "/api/v1/products",
        "/api/v1/organizations",
        "/api/v1/webhooks",
        "/api/v1/workflows/{key}/publish",
        "/api/v1/audit",
        "/api/v1/keys",
    ):
        assert f"  {path}:" in schema, path
    assert "ApiKey" in schema


@pytest.mark.django_db
def test_the_docs_page_is_served(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200 and b"swagger" in response.content.lower()


class _Page(HTMLParser):
    """The addresses a page loads (src, href, ReDoc's spec-url) and the scripts and styles written into it."""

    def __init__(self):
        super().__init__()
        self.addresses, self.inline = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.addresses += [attrs[name] for name in ("src", "href", "spec-url") if attrs.get(name)]
        if (
            (tag == "script" and not attrs.get("src"))
            or tag == "style"
            or "style" in attrs
            or any(name.startswith("on") for name in attrs)
        ):
            self.inline.append(self.get_starttag_text())


@pytest.mark.django_db
def test_redoc_is_served_from_local_static_files_alone(client):
    response = client.get("/api/redoc/")
    assert response.status_code == 200
    page = _Page()
    page.feed(response.content.decode())
    assert page.inline == []
    assert "/api/schema/" in page.addresses
    static = [a for a in page.addresses if a != "/api/schema/"]
    assert f"{settings.STATIC_URL}drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js" in static
    for address in static:
        assert address.startswith(settings.STATIC_URL), address
        assert finders.find(address.removeprefix(settings.STATIC_URL)), address


def _policy(response) -> dict[str, list[str]]:
    return {name: values for name, *values in (d.split() for d in response["Content-Security-Policy"].split(";"))}


@pytest.mark.django_db
def test_only_the_redoc_page_allows_inline_styles_and_a_blob_worker(client):
    site, redoc = _policy(client.get("/api/docs/")), _policy(client.get("/api/redoc/"))
    assert redoc.pop("style-src") == ["'self'", "'unsafe-inline'"] and redoc.pop("worker-src") == ["blob:"]
    assert site.pop("style-src") == ["'self'"] and "worker-src" not in site
    # Everything else is the site's policy: scripts from this origin only, and no inline script.
    assert redoc == site and site["script-src"] == ["'self'"]
