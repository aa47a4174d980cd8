import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.urls import reverse

from apps.runs.services import request_start, trigger_create
from tests import factories

pytestmark = pytest.mark.django_db

OURS = ("tenants", "workflows", "runs", "deliveries", "audit", "connections", "core")


@pytest.fixture
def staff_client(client):
    user = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw")
    client.force_login(user)
    return client


@pytest.fixture
def some_rows(product, receiver):
    endpoint = factories.make_endpoint(product, receiver.url())
    factories.make_workflow(product, key="w", steps=[factories.webhook_step(endpoint)])
    request_id, _ = trigger_create(
        tenant=factories.tenant_of(product), workflow="w", recipients=[{"id": "u"}], data={}, priority="normal"
    )
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


def test_a_provider_is_configured_from_the_admin_with_the_apis_checks(staff_client, product):
    import json

    from apps.audit.models import AuditEvent
    from apps.deliveries.models import ProviderConfig

    url = reverse("admin:deliveries_providerconfig_add")
    assert staff_client.get(url).status_code == 200
    form = {
        "product": product.id,
        "organization": "",
        "provider_choice": "sms:twilio",
        "credentials_json": json.dumps({"account_sid": "AC123", "auth_token": "x"}),
        "options_json": json.dumps({"sender": "+15005550006"}),
    }
    refused = staff_client.post(url, form)
    assert refused.status_code == 200 and not ProviderConfig.objects.exists()
    assert "credentials.account_sid" in refused.content.decode()

    token = "fedcba9876543210" * 2
    form["credentials_json"] = json.dumps({"account_sid": "AC" + "0123456789abcdef" * 2, "auth_token": token})
    assert staff_client.post(url, form).status_code == 302
    config = ProviderConfig.objects.get()
    assert (config.channel, config.provider, config.options) == ("sms", "twilio", {"sender": "+15005550006"})
    assert AuditEvent.objects.get(action="provider.configured").actor == "staff:ops"

    change = reverse("admin:deliveries_providerconfig_change", args=[config.pk])
    page = staff_client.get(change).content.decode()
    assert token not in page  # never shown
    # Changing the options with the credentials left empty keeps the stored credentials.
    assert (
        staff_client.post(
            change,
            {
                "provider_choice": "sms:twilio",
                "credentials_json": "",
                "options_json": json.dumps({"sender": "+15005550007"}),
            },
        ).status_code
        == 302
    )
    config.refresh_from_db()
    assert config.options == {"sender": "+15005550007"} and json.loads(config.credentials)["auth_token"] == token


def _filter_parameters(model_admin, request) -> set[str]:
    """Every query parameter a changelist's filters, search and date hierarchy read."""
    changelist = model_admin.get_changelist_instance(request)
    names = {"q", "o", "p", "all"}
    for spec in changelist.filter_specs:
        names.update(spec.expected_parameters())
    return names


def test_a_nul_in_any_admin_list_parameter_is_a_400_not_a_500(staff_client, some_rows, rf):
    user = get_user_model().objects.get(username="ops")
    urls = []
    for model, model_admin in admin.site._registry.items():
        opts = model._meta
        if opts.app_label not in OURS:
            continue
        request = rf.get("/")
        request.user = user
        for name in sorted(_filter_parameters(model_admin, request)):
            urls.append(f"{reverse(f'admin:{opts.app_label}_{opts.model_name}_changelist')}?{name}=%00")
    assert len(urls) > 40
    for url in urls:
        response = staff_client.get(url)
        assert response.status_code == 400, url
        assert b"NUL character" in response.content, url


def test_a_nul_in_an_api_list_filter_is_a_field_error(product_client):
    response = product_client.get("/api/v1/runs?status=%00")
    assert response.status_code == 400
    assert response.json()["error"]["fields"][0]["field"] == "status"


def test_the_stock_api_key_page_and_beat_s_schedule_are_out_of_the_console_s_lists(staff_client, client):
    from django.contrib.auth.models import Group
    from django_celery_beat.models import PeriodicTask

    from apps.core.schedules import periodic_tasks, schedules_sync
    from apps.dashboard.groups import OPERATORS

    home = staff_client.get(reverse("admin:index")).content.decode()
    listed = staff_client.get(reverse("admin:runs_run_changelist")).content.decode()  # the sidebar
    for page in (home, listed):
        assert "/admin/tenants/apikey/" in page  # Rowbell's keys, revoked there
        for gone in ("rest_framework_api_key", "django_celery_beat", "Periodic tasks", "Crontabs", "Clocked"):
            assert gone not in page
    assert staff_client.get("/admin/rest_framework_api_key/apikey/add/").status_code == 404
    assert staff_client.get("/admin/rest_framework_api_key/apikey/").status_code == 404

    # Beat still reads its schedule, which Rowbell keeps by name; a superuser can still open it.
    assert set(schedules_sync()) == set(periodic_tasks())
    assert PeriodicTask.objects.filter(name__in=periodic_tasks()).count() == len(periodic_tasks())
    schedule = staff_client.get(reverse("admin:django_celery_beat_periodictask_changelist")).content.decode()
    assert "rowbell: poll customer event logs" in schedule
    operator = get_user_model().objects.create_user("op", "op@example.com", "pw", is_staff=True)
    operator.groups.add(Group.objects.get(name=OPERATORS))
    client.force_login(operator)
    assert client.get(reverse("admin:django_celery_beat_periodictask_changelist")).status_code == 403
