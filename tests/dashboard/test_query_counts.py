"""Every admin list and change page of the main models runs the same number of queries at 10 and at
1,000 rows: no query per row, no count that grows with the table."""

import uuid
from datetime import timedelta

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.connections.models import Connection, Event
from apps.core.models import QueuedAction
from apps.deliveries.models import Delivery, DeliveryAttempt, DeliveryEvent, ProviderConfig, WebhookEndpoint
from apps.runs.models import Batch, Escalation, Run, RunStep, TriggerRequest
from apps.tenants.models import ApiKey, Organization, Product
from apps.workflows.models import Workflow, WorkflowVersion
from tests import factories

pytestmark = pytest.mark.django_db


class World:
    """One product with a published workflow, an endpoint and a connection; rows of every model are added
    in bulk around them."""

    def __init__(self, product, receiver_url):
        self.product = product
        self.organization, _ = factories.make_organization(product)
        self.endpoint = factories.make_endpoint(product, receiver_url)
        self.workflow = factories.make_workflow(product, key="w", steps=[factories.webhook_step(self.endpoint)])
        self.version = self.workflow.published_version
        self.connection = Connection.objects.create(
            product=product, name="db", host="127.0.0.1", database="shop", user="rowbell", password="secret"
        )
        self.request = TriggerRequest.objects.create(
            product=product, workflow_version=self.version, recipients=[], body_hash="x", actor="test"
        )
        self.n = 0

    def _run(self, i):
        return Run(
            source="api",
            cause_id=str(self.request.id),
            request=self.request,
            recipient_index=10_000 + i,
            product=self.product,
            organization=self.organization,
            workflow_version=self.version,
            recipient={"id": f"u{i}"},
            status="failed",
            rerun_of=None,
        )

    def rows(self, model, count: int) -> None:
        """Add `count` rows of `model`."""
        now = timezone.now()
        start, self.n = self.n, self.n + count
        ids = range(start, start + count)
        if model in (Run, RunStep, Escalation, Batch):
            runs = Run.objects.bulk_create([self._run(i) for i in ids])
            if model is RunStep:
                RunStep.objects.bulk_create(
                    [
                        RunStep(run=r, step_id="hook", index=0, type="notify", status="failed", error="boom")
                        for r in runs
                    ]
                )
            elif model is Escalation:
                Escalation.objects.bulk_create([Escalation(run=r, product=self.product, error="boom") for r in runs])
            elif model is Batch:
                Batch.objects.bulk_create(
                    [
                        Batch(
                            workflow_version=self.version,
                            step_id="b",
                            key=f"k{r.id}",
                            owner=r,
                            closes_at=now,
                            status="closed",
                        )
                        for r in runs
                    ]
                )
            return
        build = {
            Delivery: lambda i: Delivery(
                product=self.product,
                organization=self.organization,
                channel="webhook",
                endpoint=self.endpoint,
                target="https://example.com/hook",
                payload={"i": i},
                max_attempts=5,
                status="delivered",
                message_id=f"msg_{uuid.uuid4().hex}",
            ),
            WebhookEndpoint: lambda i: WebhookEndpoint(
                product=self.product, url=f"https://example.com/{i}", secret="whsec_x"
            ),
            TriggerRequest: lambda i: TriggerRequest(
                product=self.product,
                organization=self.organization,
                workflow_version=self.version,
                recipients=[],
                body_hash="x",
                actor="test",
            ),
            Workflow: lambda i: Workflow(product=self.product, key=f"w{i}", draft={"steps": []}),
            WorkflowVersion: lambda i: WorkflowVersion(
                workflow=self.workflow, version=100 + i, definition={}, published_by="test"
            ),
            Connection: lambda i: Connection(product=self.product, name=f"db{i}", host="h", database="d", user="u"),
            Event: lambda i: Event(
                connection=self.connection,
                source_id=i,
                xid=i,
                capture="c",
                table_name="t",
                op="INSERT",
                ids=[i],
                captured_at=now,
            ),
            AuditEvent: lambda i: AuditEvent(
                product=self.product,
                organization=self.organization,
                actor="test",
                action="thing.done",
                target_type="thing",
                target_id=str(i),
            ),
            Product: lambda i: Product(name=f"P{i}"),
            Organization: lambda i: Organization(product=self.product, name=f"O{i}"),
            ApiKey: lambda i: ApiKey(
                id=f"k{i}.{uuid.uuid4().hex}",
                prefix=f"k{i}",
                hashed_key=uuid.uuid4().hex,
                name=f"key {i}",
                scope="product",
                product=self.product,
            ),
            QueuedAction: lambda i: QueuedAction(
                name="connection.check", target_type="connection", target_id=str(self.connection.id), actor="staff:ops"
            ),
            ProviderConfig: lambda i: ProviderConfig(
                product=Product.objects.create(name=f"PC{i}"), channel="sms", provider="twilio", credentials="{}"
            ),
        }
        if model is DeliveryAttempt:
            deliveries = Delivery.objects.bulk_create([build[Delivery](i) for i in ids])
            DeliveryAttempt.objects.bulk_create(
                [
                    DeliveryAttempt(
                        delivery=d, number=1, started_at=now - timedelta(seconds=1), outcome="success", status_code=200
                    )
                    for d in deliveries
                ]
            )
            DeliveryEvent.objects.bulk_create(
                [DeliveryEvent(delivery=d, status="delivered", at=now) for d in deliveries]
            )
            return
        model.objects.bulk_create([build[model](i) for i in ids])


MAIN = [
    Delivery,
    DeliveryAttempt,
    WebhookEndpoint,
    ProviderConfig,
    Run,
    RunStep,
    TriggerRequest,
    Escalation,
    Batch,
    Workflow,
    WorkflowVersion,
    Connection,
    Event,
    AuditEvent,
    Product,
    Organization,
    ApiKey,
    QueuedAction,
]


def _queries(client, url) -> int:
    client.get(url)  # warm: the first view fills per-process caches (content types, permissions)
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(captured.captured_queries)


def test_the_main_models_have_an_admin_measured_here():
    ours = {m for m in admin.site._registry if m._meta.app_label in factories.OUR_APPS}
    assert ours == set(MAIN)


@pytest.mark.parametrize("model", MAIN, ids=lambda m: m._meta.label)
def test_list_and_change_pages_run_as_many_queries_at_1000_rows_as_at_10(client, product, receiver, model):
    world = World(product, receiver.url())
    client.force_login(get_user_model().objects.create_superuser("ops", "ops@example.com", "pw"))
    opts = model._meta
    listing = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")

    world.rows(model, 10)
    row = model.objects.order_by("pk").last()
    page = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[row.pk])
    at_10 = (_queries(client, listing), _queries(client, page))

    world.rows(model, 990)
    assert model.objects.count() >= 1000
    at_1000 = (_queries(client, listing), _queries(client, page))
    assert at_1000 == at_10, f"{opts.label}: (list, change) queries {at_10} at 10 rows, {at_1000} at 1,000"
