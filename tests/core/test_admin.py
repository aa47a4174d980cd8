import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.urls import reverse

from apps.runs.services import request_start, trigger_create
from tests import factories

pytestmark = pytest.mark.django_db

OURS = ("tenants", "workflows", "runs", "deliveries", "audit", "connections")


@pytest.fixture
def staff_client(client):
    user = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw")
    client.force_login(user)
    return client


@pytest.fixture
def some_rows(product, receiver):
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(product, key="w", steps=[factories.webhook_step(endpoint)])
    request_id, _ = trigger_create(tenant=factories.tenant_of(product), workflow="w", recipients=[{"id": "u"}],
                                   data={}, priority="normal")
    request_start(request_id=request_id)


def test_every_model_of_ours_has_a_working_admin_list_and_change_page(staff_client, some_rows):
    models = [m for m in admin.site._registry if m._meta.app_label in OURS]
    assert {m._meta.app_label for m in models} == set(OURS)
    for model in models:
        opts = model._meta
        listing = staff_client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
        assert listing.status_code == 200, opts.label
        row = model.objects.first()
        if row is not None:
            page = staff_client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[row.pk]))
            assert page.status_code == 200, opts.label


def test_secrets_never_appear_in_the_admin(staff_client, product, receiver):
    from apps.deliveries.models import WebhookEndpoint

    endpoint = factories.make_endpoint(product, receiver.url())
    secret = WebhookEndpoint.objects.get(id=endpoint.id).secret
    page = staff_client.get(reverse("admin:deliveries_webhookendpoint_change", args=[endpoint.id]))
    assert page.status_code == 200 and secret.encode() not in page.content
