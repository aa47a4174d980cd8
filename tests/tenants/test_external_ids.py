"""An organization's external id: the id the product's own database gives it (e.g. `orders.org_id`), unique
within the product when set, so that a customer row can be routed to the organization that owns it."""

import json
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.urls import reverse

from apps.audit.models import AuditEvent
from apps.dashboard.groups import READ_ONLY
from apps.tenants.models import Organization
from apps.tenants.selectors import organizations_by_external_id
from apps.tenants.services import organization_create
from tests import factories
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def _create(client, **body):
    return client.post("/api/v1/organizations", {"name": "Globex", **body}, format="json")


def _patch(client, organization_id, **body):
    return client.patch(f"/api/v1/organizations/{organization_id}", body, format="json")


def _audit(action, organization_id):
    return list(
        AuditEvent.objects.filter(action=action, target_id=str(organization_id))
        .order_by("id")
        .values_list("data", flat=True)
    )


# --- The API ------------------------------------------------------------------------------------------


def test_an_organization_created_with_an_external_id_shows_it_and_the_creation_is_audited(product_client):
    response = _create(product_client, external_id="42")
    assert response.status_code == 201
    body = response.json()
    assert body["external_id"] == "42"
    assert Organization.objects.get(id=body["id"]).external_id == "42"
    assert product_client.get(f"/api/v1/organizations/{body['id']}").json()["external_id"] == "42"
    assert _audit("organization.created", body["id"]) == [{"name": "Globex", "external_id": "42", "sandbox": False}]


def test_an_organization_created_without_one_has_null_and_many_may_have_none(product_client):
    first, second = _create(product_client), _create(product_client, name="Initech", external_id="")
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["external_id"] is None and second.json()["external_id"] is None
    assert list(Organization.objects.values_list("external_id", flat=True)) == [None, None]
    listed = product_client.get("/api/v1/organizations").json()
    assert [o["external_id"] for o in listed] == [None, None]


def test_the_external_id_is_set_changed_and_cleared_by_patch_each_change_audited(product_client):
    organization_id = _create(product_client).json()["id"]

    response = _patch(product_client, organization_id, external_id="  org-7 ")
    assert response.status_code == 200
    assert response.json()["external_id"] == "org-7"  # surrounding whitespace is dropped
    assert _patch(product_client, organization_id, external_id="org-8").json()["external_id"] == "org-8"
    cleared = _patch(product_client, organization_id, external_id=None)
    assert cleared.status_code == 200 and cleared.json()["external_id"] is None
    assert Organization.objects.get(id=organization_id).external_id is None

    assert _audit("organization.updated", organization_id) == [
        {"external_id": "org-7"},
        {"external_id": "org-8"},
        {"external_id": None},
    ]


def test_an_empty_string_clears_it_too_and_a_patch_that_changes_nothing_writes_nothing(product_client):
    organization_id = _create(product_client, external_id="42").json()["id"]
    assert _patch(product_client, organization_id, external_id="").json()["external_id"] is None
    assert _patch(product_client, organization_id, external_id="").json()["external_id"] is None
    assert _patch(product_client, organization_id).json()["name"] == "Globex"
    assert _audit("organization.updated", organization_id) == [{"external_id": None}]


def test_patch_renames_without_touching_the_external_id(product_client):
    organization_id = _create(product_client, external_id="42").json()["id"]
    body = _patch(product_client, organization_id, name="Globex Corp").json()
    assert (body["name"], body["external_id"]) == ("Globex Corp", "42")
    assert _audit("organization.updated", organization_id) == [{"name": "Globex Corp"}]


def test_a_duplicate_on_create_answers_409_naming_the_field_the_holder_and_what_to_do(product_client):
    holder = _create(product_client, external_id="42").json()
    response = _create(product_client, name="Initech", external_id="42")
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "conflict"
    reason = (
        f"Organization 'Globex' ({holder['id']}) of this product already has external id '42': "
        "choose another, or clear it on that organization first."
    )
    assert error["message"] == reason
    assert error["fields"] == [{"field": "external_id", "reason": reason}]
    # Nothing of the refused organization was written: no row, no key, no audit.
    assert list(Organization.objects.values_list("name", flat=True)) == ["Globex"]
    assert AuditEvent.objects.filter(action="organization.created").count() == 1


def test_a_duplicate_on_update_answers_409_and_leaves_the_organization_as_it_was(product_client):
    _create(product_client, external_id="42")
    other = _create(product_client, name="Initech", external_id="43").json()
    response = _patch(product_client, other["id"], name="Initech 2", external_id="42")
    assert response.status_code == 409
    assert response.json()["error"]["fields"][0]["field"] == "external_id"
    assert "already has external id '42'" in response.json()["error"]["message"]
    row = Organization.objects.get(id=other["id"])
    assert (row.name, row.external_id) == ("Initech", "43")
    assert _audit("organization.updated", other["id"]) == []
    # Setting an organization's own external id again is no conflict.
    assert _patch(product_client, other["id"], external_id="43").status_code == 200


def test_another_product_may_use_the_same_external_id(product_client):
    _, other_key = factories.make_product(name="Other")
    assert _create(product_client, external_id="42").status_code == 201
    response = _create(client_for(other_key), external_id="42")
    assert response.status_code == 201 and response.json()["external_id"] == "42"


@pytest.mark.parametrize(
    "external_id, reason",
    [
        ("4\x002", "Contains a NUL character (\\u0000), which cannot be stored."),
        ("x" * 201, "Ensure this field has no more than 200 characters."),
        (42, "Must be a string, not a number."),
    ],
)
def test_an_external_id_that_cannot_be_stored_answers_400_naming_it(product_client, external_id, reason):
    organization_id = _create(product_client).json()["id"]
    for response in (
        _create(product_client, name="Initech", external_id=external_id),
        _patch(product_client, organization_id, external_id=external_id),
    ):
        assert response.status_code == 400
        assert response.json()["error"]["fields"] == [{"field": "external_id", "reason": reason}]
    assert Organization.objects.count() == 1


def test_a_misspelt_field_is_refused_not_ignored(product_client):
    response = _create(product_client, externalId="42")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == [
        {"field": "externalId", "reason": "Unknown field. Did you mean 'external_id'?"}
    ]


def test_an_organization_key_may_not_change_an_external_id_and_other_products_see_nothing(product_client, platform_key):
    created = _create(product_client, external_id="42").json()
    own_key = client_for(created["api_key"])
    response = _patch(own_key, created["id"], external_id="43")
    assert response.status_code == 403
    assert response.json()["error"]["message"] == (
        "Organizations are changed with their product's key (or a platform key)."
    )
    _, other_key = factories.make_product(name="Other")
    assert _patch(client_for(other_key), created["id"], external_id="43").status_code == 404
    assert Organization.objects.get(id=created["id"]).external_id == "42"
    # A platform key sees every organization and may change it.
    assert _patch(client_for(platform_key), created["id"], external_id="43").json()["external_id"] == "43"
    assert own_key.get(f"/api/v1/organizations/{created['id']}").json()["external_id"] == "43"


def test_the_openapi_description_shows_the_external_id_and_the_409():
    out = StringIO()
    call_command("spectacular", "--format", "openapi-json", stdout=out)
    schema = json.loads(out.getvalue())
    components = schema["components"]["schemas"]
    assert components["OrganizationOutput"]["properties"]["external_id"]["nullable"] is True
    assert "external_id" in components["OrganizationOutput"]["required"]
    for name in ("OrganizationCreateInputRequest", "PatchedOrganizationUpdateInputRequest"):
        field = components[name]["properties"]["external_id"]
        assert field["maxLength"] == 200 and field["nullable"] is True, name
    collection = schema["paths"]["/api/v1/organizations"]["post"]
    detail = schema["paths"]["/api/v1/organizations/{organization_id}"]["patch"]
    assert "409" in collection["responses"] and "409" in detail["responses"]


# --- The selector -------------------------------------------------------------------------------------


def _organization(product, name, external_id=None):
    return organization_create(product=product, name=name, external_id=external_id, actor="test")[0]


def test_the_selector_resolves_many_external_ids_in_one_query(product, django_assert_num_queries):
    organizations = {
        external_id: _organization(product, f"Org {external_id}", external_id)
        for external_id in ("1", "2", "42", "acme")
    }
    _organization(product, "No external id")
    rows = [{"org_id": 42}, {"org_id": 1}, {"org_id": 42}, {"org_id": 99}, {"org_id": "acme"}]

    with django_assert_num_queries(1):
        found = organizations_by_external_id(product_id=product.id, external_ids=[str(row["org_id"]) for row in rows])

    assert {external_id: o.id for external_id, o in found.items()} == {
        "42": organizations["42"].id,
        "1": organizations["1"].id,
        "acme": organizations["acme"].id,
    }


def test_the_selector_ignores_other_products_organizations(product):
    other, _ = factories.make_product(name="Other")
    ours, theirs = _organization(product, "Ours", "42"), _organization(other, "Theirs", "42")
    _organization(other, "Only theirs", "7")

    found = organizations_by_external_id(product_id=product.id, external_ids=["42", "7"])
    assert {external_id: o.id for external_id, o in found.items()} == {"42": ours.id}
    assert organizations_by_external_id(product_id=other.id, external_ids=["42"])["42"].id == theirs.id


def test_the_selector_asks_nothing_for_no_ids(product, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert organizations_by_external_id(product_id=product.id, external_ids=[]) == {}
        assert organizations_by_external_id(product_id=product.id, external_ids=[""]) == {}


# --- The admin ----------------------------------------------------------------------------------------


def _change(client, organization, **fields):
    url = reverse("admin:tenants_organization_change", args=[organization.id])
    return client.post(url, {"name": organization.name, **fields})


def test_staff_set_and_clear_the_external_id_in_the_admin_audited_as_themselves(client, product):
    organization, _ = factories.make_organization(product, name="Globex")
    client.force_login(get_user_model().objects.create_superuser("ops", "ops@example.com", "pw"))

    assert _change(client, organization, external_id=" 42 ").status_code == 302
    organization.refresh_from_db()
    assert organization.external_id == "42"
    listing = client.get(reverse("admin:tenants_organization_changelist"), {"q": "42"}).content.decode()
    assert "Globex" in listing
    assert _change(client, organization, external_id="").status_code == 302
    organization.refresh_from_db()
    assert organization.external_id is None

    updates = AuditEvent.objects.filter(action="organization.updated", target_id=str(organization.id))
    assert [(e.actor, e.data) for e in updates.order_by("id")] == [
        ("staff:ops", {"external_id": "42"}),
        ("staff:ops", {"external_id": None}),
    ]


def test_the_admin_refuses_a_duplicate_with_the_apis_reason(client, product):
    _organization(product, "Globex", "42")
    organization, _ = factories.make_organization(product, name="Initech")
    client.force_login(get_user_model().objects.create_superuser("ops", "ops@example.com", "pw"))

    page = _change(client, organization, external_id="42")
    assert page.status_code == 200  # the form again, with the error
    assert "already has external id &#x27;42&#x27;: choose another" in page.content.decode()
    organization.refresh_from_db()
    assert organization.external_id is None


def test_read_only_operators_cannot_change_an_organization(client, product):
    organization, _ = factories.make_organization(product, name="Globex")
    user = get_user_model().objects.create_user("viewer", "v@example.com", "pw", is_staff=True)
    user.groups.add(Group.objects.get(name=READ_ONLY))
    client.force_login(user)

    assert _change(client, organization, external_id="42").status_code == 403
    organization.refresh_from_db()
    assert organization.external_id is None
