"""The console's "Describe a workflow" page in a real browser, against a fake OpenAI-compatible model: the draft
is shown with its explanation and preview, saved as a draft only when asked, and never published from there."""

import json

import pytest

from apps.workflows.models import Workflow
from tests import factories
from tests.connections.test_builder import FakeModel

from .conftest import log_in, screenshot, staff_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _draft(endpoint) -> str:
    return json.dumps(
        {
            "explanation": "Posts each signup to the team's webhook.",
            "workflow": {
                "key": "signup-hook",
                "name": "Signup hook",
                "steps": [{"id": "hook", "type": "notify", "channel": "webhook", "webhook": str(endpoint.id)}],
            },
        }
    )


def test_an_operator_describes_a_workflow_and_saves_the_draft(page, live_server, settings):
    model = FakeModel()
    settings.ROWBELL_AI_BASE_URL, settings.ROWBELL_AI_MODEL = model.url, "fake-1"
    try:
        product, _ = factories.make_product(name="Shop")
        endpoint = factories.make_endpoint(product, "http://127.0.0.1:9/hook", description="team")
        model.script.append('{"explanation": "x", "workflow": {"key": "signup-hook", "steps": [{"id": "bad"}]}}')
        model.script.append(_draft(endpoint))
        staff_user("ops")
        log_in(page, "ops")
        page.click("#describe-link")
        page.select_option("#id_product", str(product.id))
        page.wait_for_selector("#describe-form")
        page.fill("#id_prompt", "Post every signup to the team webhook.")
        page.click("#describe-generate")
        page.wait_for_selector("#describe-answer[data-outcome=draft]")
        assert "Posts each signup" in page.inner_text("#describe-explanation")
        assert "2 rounds" in page.inner_text("#describe-answer")
        assert '"signup-hook"' in page.inner_text("#describe-workflow")
        screenshot(page, "describe-workflow")
        assert not Workflow.objects.exists()  # shown, not saved

        page.click("#describe-save")
        page.wait_for_url("**/admin/workflows/workflow/*/change/")
        workflow = Workflow.objects.get(key="signup-hook")
        assert workflow.published_version is None and workflow.draft["steps"][0]["webhook"] == str(endpoint.id)
        assert "Saved as the draft of 'signup-hook'" in page.inner_text("ul.messagelist")
    finally:
        model.close()
