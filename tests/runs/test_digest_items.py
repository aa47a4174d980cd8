"""A digest carries its items: after a `batch` step, `batch.items` is the batch's items in templates (`x.name`
on a mapping is its key first, whatever the key is called), and a webhook step sends the batch. The
sandbox refuses what it refused before."""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from apps.core.templating import TemplateRenderError, render
from apps.deliveries.models import Delivery, DeliveryStatus
from apps.deliveries.services import deliveries_send
from apps.runs.engine import runs_resume_due
from apps.runs.models import Run, RunStatus
from apps.runs.services import request_start, runs_execute, trigger_create
from tests import factories

pytestmark = pytest.mark.django_db


def _start(product, data, recipient=None) -> Run:
    request_id, _ = trigger_create(
        tenant=factories.tenant_of(product),
        workflow="w",
        recipients=[recipient or {"id": "u1", "email": "u1@example.com"}],
        data=data,
        priority="normal",
    )
    request_start(request_id=request_id)
    return Run.objects.get(request_id=request_id)


def _window_closes(run: Run) -> None:
    Run.objects.filter(id=run.id).update(resume_at=timezone.now() - timedelta(seconds=1))
    assert runs_resume_due() == 1
    runs_execute(run_ids=[run.id])
    deliveries_send(
        delivery_ids=list(Delivery.objects.filter(status=DeliveryStatus.QUEUED).values_list("id", flat=True))
    )


def _batch_then(product, step) -> None:
    factories.make_workflow(
        product,
        key="w",
        steps=[{"id": "digest", "type": "batch", "key": "recipient.id", "window": "1h"}, step],
    )


def test_a_digest_email_loops_over_batch_items_and_shows_every_one(product):
    _batch_then(
        product,
        factories.email_step(
            subject="{{ batch.count }} updates", body="{% for item in batch.items %}[{{ item.data.x }}]{% endfor %}"
        ),
    )
    runs = [_start(product, {"x": x}) for x in ("apple", "pear", "plum")]
    _window_closes(runs[0])
    runs[0].refresh_from_db()
    assert runs[0].status == RunStatus.COMPLETED, runs[0].error
    assert len(mail.outbox) == 1
    assert mail.outbox[0].subject == "3 updates" and mail.outbox[0].body == "[apple][pear][plum]"
    assert Delivery.objects.get(run=runs[0]).payload["text"] == "[apple][pear][plum]"


def test_a_key_of_data_named_like_a_dict_method_is_the_key(product):
    factories.make_workflow(
        product,
        key="w",
        steps=[factories.email_step(subject="s", body="{{ data.items }}|{{ data.keys }}|{{ data.get }}")],
    )
    run = _start(product, {"items": "2 books", "keys": "front door", "get": "go"})
    run.refresh_from_db()
    assert run.status == RunStatus.COMPLETED, run.error
    assert mail.outbox[0].body == "2 books|front door|go"


@pytest.mark.parametrize("column", ["items", "keys", "values", "get", "update", "pop", "copy"])
def test_a_row_column_named_like_a_dict_method_renders_the_column(column):
    row = {"id": 1, column: f"the {column} column"}
    assert render(f"{{{{ row.{column} }}}}", {"row": row}) == f"the {column} column"
    # Without such a column, the attribute is what it was (a method), so `row.items()` still works.
    assert render("{% for k, v in row.items() %}{{ k }}{% endfor %}", {"row": {"id": 1}}) == "id"


def test_a_webhook_after_a_batch_carries_its_items_and_count(product, receiver):
    endpoint = factories.make_endpoint(product, receiver.url())
    _batch_then(product, factories.webhook_step(endpoint))
    runs = [_start(product, {"x": x}) for x in (1, 2)]
    _window_closes(runs[0])
    assert receiver.wait_for(1)
    body = Webhook(endpoint.secret).verify(receiver.requests[0]["body"], receiver.requests[0]["headers"])
    batch = body["data"]["batch"]
    assert batch["count"] == 2 and batch["key"] == "u1"
    assert [(i["data"], i["recipient"]["id"], i["run_id"]) for i in batch["items"]] == [
        ({"x": 1}, "u1", runs[0].id),
        ({"x": 2}, "u1", runs[1].id),
    ]


def test_a_webhook_without_a_batch_step_has_no_batch(product, receiver):
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(product, key="w", steps=[factories.webhook_step(endpoint)])
    _start(product, {"x": 1})
    assert receiver.wait_for(1)
    body = Webhook(endpoint.secret).verify(receiver.requests[0]["body"], receiver.requests[0]["headers"])
    assert "batch" not in body["data"] and body["data"]["data"] == {"x": 1}


@pytest.mark.parametrize(
    "template",
    [
        "{{ data.__class__.__mro__ }}",
        "{{ data.items.__self__ }}",
        "{{ data.keys.__globals__ }}",
        "{{ row.items.__class__.__mro__[1].__subclasses__() }}",
        "{{ batch.items.__class__ }}",
        "{{ batch.pop.__self__ }}",
        "{{ row['items'].__class__ }}",
    ],
)
def test_what_the_sandbox_refused_it_still_refuses(template):
    context = {"data": {"x": 1}, "row": {"items": "a column"}, "batch": {"items": [{"data": {}}], "count": 1}}
    with pytest.raises(TemplateRenderError) as refused:
        render(template, context)
    assert "<class" not in str(refused.value) and "built-in" not in str(refused.value)
