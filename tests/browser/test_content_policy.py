"""The console and the API docs under their Content-Security-Policy, in a real browser: nothing is refused,
nothing is loaded from another origin, and the pages' scripts (charts, product chooser, review selection)
still work without inline script."""

from urllib.parse import urlsplit

import pytest

from apps.deliveries.models import Delivery, DeliveryStatus
from apps.runs.engine import runs_execute
from apps.runs.services import request_start, trigger_create
from tests import factories

from .conftest import log_in, staff_user

pytestmark = pytest.mark.browser

PAGES = [
    "/admin/",
    "/admin/review/",
    "/admin/runs/run/",
    "/admin/deliveries/delivery/",
    "/admin/login/",
    "/api/docs/",
    "/api/redoc/",
]


def _held_delivery(product, receiver):
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(product, key="held", sandbox=True, steps=[factories.webhook_step(endpoint)])
    request_id, _ = trigger_create(
        tenant=factories.tenant_of(product), workflow="held", priority="normal", recipients=[{"id": "u1"}], data={}
    )
    runs_execute(run_ids=request_start(request_id=request_id))
    return Delivery.objects.get(status=DeliveryStatus.HELD)


def test_no_page_breaks_its_content_security_policy_or_loads_another_origin(page, live_server, product, receiver):
    held = _held_delivery(product, receiver)
    staff_user("ops")
    refused, foreign = [], []
    page.on(
        "console", lambda m: refused.append((page.url, m.text[:160])) if "Content Security Policy" in m.text else None
    )
    own = urlsplit(live_server.url).netloc
    page.on(
        "request",
        lambda r: (
            foreign.append(r.url)
            if urlsplit(r.url).scheme in ("http", "https") and urlsplit(r.url).netloc != own
            else None
        ),
    )
    log_in(page, "ops")
    pages = PAGES + [f"/admin/deliveries/delivery/{held.id}/change/"]
    for path in pages:
        response = page.goto(path)
        assert response.status == 200, path
        assert "script-src 'self'" in response.headers["content-security-policy"], path
        page.wait_for_load_state("networkidle")
    assert refused == [] and foreign == []

    # The product chooser applies at once, by the console's script.
    page.goto("/admin/review/")
    with page.expect_navigation():
        page.select_option("select[name=product]", str(product.id))
    assert f"product={product.id}" in page.url
    # "Select all on this page" checks every held message.
    page.click("#review-select-all")
    assert page.is_checked(f"input[name=message_id][value='{held.message_id}']")
