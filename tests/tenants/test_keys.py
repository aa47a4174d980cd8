from io import StringIO

import pytest
from django.core.management import call_command

from apps.audit.models import AuditEvent
from apps.tenants.models import ApiKey
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def test_create_platform_key_prints_a_working_key_as_last_line():
    out = StringIO()
    call_command("create_platform_key", "--name", "ops", stdout=out, stderr=StringIO())
    key = out.getvalue().strip().splitlines()[-1]
    response = client_for(key).post("/api/v1/products", {"name": "Acme"}, format="json")
    assert response.status_code == 201


def test_product_onboarding_returns_id_name_and_a_key_that_works(platform_key):
    response = client_for(platform_key).post("/api/v1/products", {"name": "Acme"}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert set(body) >= {"id", "name", "api_key"} and body["name"] == "Acme"
    assert client_for(body["api_key"]).get(f"/api/v1/products/{body['id']}").json()["name"] == "Acme"


def test_keys_are_stored_hashed_never_in_clear(platform_key):
    raw = client_for(platform_key).post("/api/v1/products", {"name": "Acme"}, format="json").json()["api_key"]
    prefix, secret = raw.split(".")
    stored = ApiKey.objects.get(prefix=prefix)
    assert stored.hashed_key.startswith("sha512$$") and secret not in stored.hashed_key and raw not in stored.id


@pytest.mark.parametrize(
    "header, reason",
    [
        (None, "no key"),
        ("Api-Key nope.nope", "unknown key"),
        ("Bearer abc", "wrong scheme"),
    ],
)
def test_calls_without_a_valid_key_answer_401_in_the_error_shape(header, reason):
    client = client_for(None)
    if header:
        client.credentials(HTTP_AUTHORIZATION=header)
    response = client.post("/api/v1/products", {"name": "x"}, format="json")
    assert response.status_code == 401, reason
    assert response.json()["error"]["code"] in ("not_authenticated", "authentication_failed")
    assert response["WWW-Authenticate"] == "Api-Key"


def test_only_a_platform_key_onboards_products(product_client):
    response = product_client.post("/api/v1/products", {"name": "Other"}, format="json")
    assert response.status_code == 403
    assert response.json()["error"]["message"] == "This endpoint needs a platform key."


def test_product_name_is_required_with_field_and_reason(platform_key):
    response = client_for(platform_key).post("/api/v1/products", {}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == [{"field": "name", "reason": "This field is required."}]


def test_organizations_belong_to_the_calling_product(product_with_key):
    product, key = product_with_key
    response = client_for(key).post("/api/v1/organizations", {"name": "Globex"}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert body["product_id"] == str(product.id) and body["name"] == "Globex" and "." in body["api_key"]
    org_client = client_for(body["api_key"])
    assert org_client.get(f"/api/v1/organizations/{body['id']}").json()["id"] == body["id"]
    # An organization key cannot create organizations.
    assert org_client.post("/api/v1/organizations", {"name": "x"}, format="json").status_code == 403


def test_cross_tenant_reads_answer_404_like_missing_objects(platform_key):
    platform = client_for(platform_key)
    a = platform.post("/api/v1/products", {"name": "A"}, format="json").json()
    b = platform.post("/api/v1/products", {"name": "B"}, format="json").json()
    a_org1 = client_for(a["api_key"]).post("/api/v1/organizations", {"name": "a1"}, format="json").json()
    a_org2 = client_for(a["api_key"]).post("/api/v1/organizations", {"name": "a2"}, format="json").json()
    b_org = client_for(b["api_key"]).post("/api/v1/organizations", {"name": "b1"}, format="json").json()

    missing = client_for(a["api_key"]).get("/api/v1/organizations/00000000-0000-0000-0000-000000000000")
    foreign = client_for(a["api_key"]).get(f"/api/v1/organizations/{b_org['id']}")
    assert missing.status_code == foreign.status_code == 404
    assert missing.json() == foreign.json()
    # Sibling organizations cannot see each other; the product sees both of its own.
    assert client_for(a_org1["api_key"]).get(f"/api/v1/organizations/{a_org2['id']}").status_code == 404
    listed = {o["id"] for o in client_for(a["api_key"]).get("/api/v1/organizations").json()}
    assert listed == {a_org1["id"], a_org2["id"]}
    assert [o["id"] for o in client_for(a_org1["api_key"]).get("/api/v1/organizations").json()] == [a_org1["id"]]
    assert client_for(a["api_key"]).get(f"/api/v1/products/{b['id']}").status_code == 404


def test_rotation_without_grace_stops_the_old_key_at_once(product_with_key):
    product, old = product_with_key
    response = client_for(old).post(f"/api/v1/products/{product.id}/rotate-key", {}, format="json")
    assert response.status_code == 200
    new = response.json()["api_key"]
    assert client_for(old).get(f"/api/v1/products/{product.id}").status_code == 401
    assert client_for(new).get(f"/api/v1/products/{product.id}").status_code == 200
    assert AuditEvent.objects.filter(action="api_key.rotated", product_id=product.id).count() == 1


def test_rotation_with_grace_keeps_the_old_key_until_the_stated_time(product_with_key):
    product, old = product_with_key
    response = client_for(old).post(f"/api/v1/products/{product.id}/rotate-key", {"grace_seconds": 3600}, format="json")
    body = response.json()
    assert body["previous_keys_stop_at"] is not None
    assert client_for(old).get(f"/api/v1/products/{product.id}").status_code == 200
    assert client_for(body["api_key"]).get(f"/api/v1/products/{product.id}").status_code == 200
    # Once the stated time has passed, the old key no longer works.
    ApiKey.objects.filter(prefix=old.split(".")[0]).update(expiry_date="2000-01-01T00:00:00Z")
    assert client_for(old).get(f"/api/v1/products/{product.id}").status_code == 401


def test_rotation_grace_is_bounded(product_with_key):
    product, key = product_with_key
    response = client_for(key).post(
        f"/api/v1/products/{product.id}/rotate-key", {"grace_seconds": 10**7}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["fields"][0]["field"] == "grace_seconds"


def test_revoked_key_stops_working_and_is_audited(product_with_key):
    product, key = product_with_key
    org = client_for(key).post("/api/v1/organizations", {"name": "o"}, format="json").json()
    prefix = org["api_key"].split(".")[0]
    response = client_for(key).post(f"/api/v1/keys/{prefix}/revoke")
    assert response.status_code == 200 and response.json()["revoked"] is True
    assert client_for(org["api_key"]).get("/api/v1/organizations").status_code == 401
    assert AuditEvent.objects.filter(action="api_key.revoked", target_id=prefix).exists()


def test_organization_cannot_revoke_its_products_key(product_with_key):
    product, key = product_with_key
    org = client_for(key).post("/api/v1/organizations", {"name": "o"}, format="json").json()
    response = client_for(org["api_key"]).post(f"/api/v1/keys/{key.split('.')[0]}/revoke")
    assert response.status_code == 404
    assert client_for(key).get("/api/v1/organizations").status_code == 200


def test_organization_names_must_be_strings(product_with_key):
    product, key = product_with_key
    response = client_for(key).post("/api/v1/organizations", {"name": -2279}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == [{"field": "name", "reason": "Must be a string, not a number."}]
