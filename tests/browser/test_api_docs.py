"""The API docs in a real browser: Swagger UI (/api/docs/) and ReDoc (/api/redoc/) draw the API's operations
from /api/schema/ with files from Rowbell's own origin alone, so they work offline, and nothing on either page
breaks its Content-Security-Policy."""

from urllib.parse import urlsplit

import pytest

from .conftest import screenshot

pytestmark = pytest.mark.browser

# POST /api/v1/trigger, and the description of its Idempotency-Key header: text only the schema has.
OPERATION, PATH, ITS_TEXT = "v1_trigger_create", "/api/v1/trigger", "Repeat-safe retries"


def _watch(page, live_server):
    """What the page's policy refused, what it asked of another origin, and the errors its scripts raised."""
    refused, foreign, errors = [], [], []
    page.on("console", lambda m: refused.append(m.text[:160]) if "Content Security Policy" in m.text else None)
    own = urlsplit(live_server.url).netloc
    page.on(
        "request",
        lambda r: (
            foreign.append(r.url)
            if urlsplit(r.url).scheme in ("http", "https") and urlsplit(r.url).netloc != own
            else None
        ),
    )
    page.on("pageerror", lambda e: errors.append(str(e)[:160]))
    return refused, foreign, errors


def test_redoc_draws_the_operations_with_nothing_from_another_origin(page, live_server):
    refused, foreign, errors = _watch(page, live_server)
    response = page.goto("/api/redoc/")
    assert response.status == 200
    page.get_by_role("heading", name=OPERATION).wait_for()
    page.get_by_text(ITS_TEXT).first.wait_for()
    # Search runs in ReDoc's worker, started from a blob: URL.
    page.fill("input[aria-label=Search]", "trigger")
    page.locator("[data-role='search:results']").get_by_role("menuitem", name=OPERATION).wait_for()
    # Redocly's attribution stays, without the logo ReDoc would fetch from Redocly's CDN.
    page.get_by_text("API docs by Redocly").wait_for()
    page.wait_for_load_state("networkidle")
    screenshot(page, "api-redoc")
    assert refused == [] and foreign == [] and errors == []


def test_swagger_ui_draws_the_operations_with_nothing_from_another_origin(page, live_server):
    refused, foreign, errors = _watch(page, live_server)
    response = page.goto("/api/docs/")
    assert response.status == 200
    page.click(f".opblock-summary-path[data-path='{PATH}']")
    page.get_by_text(ITS_TEXT).first.wait_for()
    page.wait_for_load_state("networkidle")
    screenshot(page, "api-swagger-ui")
    assert refused == [] and foreign == [] and errors == []
