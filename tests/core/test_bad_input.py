"""Input that once reached the database or an int() it could not pass: a 400 that says what is wrong."""

import pytest

from tests.conftest import client_for

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "method, path",
    [
        ("get", "/api/v1/deliveries/msg_%00"),
        ("post", "/api/v1/keys/ab%00cd/revoke"),
        ("post", "/webhooks/providers/mailgun/tok%00en/tracking/"),  # needs no key
        ("get", "/t/c/abc%00def"),
    ],
)
def test_a_nul_in_the_path_is_a_400_not_a_500(product_with_key, method, path):
    _, key = product_with_key
    response = getattr(client_for(key), method)(path)
    assert response.status_code == 400
    assert b"NUL character" in response.content


def test_a_raw_nul_byte_in_a_form_body_is_a_400(client):
    response = client.post(
        "/admin/login/", data=b"username=a\x00b&password=x", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 400 and b"username" in response.content


@pytest.mark.parametrize(
    "query, field",
    [
        ("limit=%C2%B2", "limit"),  # a superscript two: str.isdigit() says yes, int() says no
        ("limit=" + "9" * 5000, "limit"),  # past int()'s 4,300 digits
        ("limit=0", "limit"),
        ("cursor=cD1hYmM%3D", "cursor"),  # base64 of "p=abc": decodes, but is no position
        ("cursor=bz01JnA9YWJj", "cursor"),  # "o=5&p=abc"
    ],
)
def test_paging_input_that_is_not_a_number_is_a_400(product_with_key, query, field):
    _, key = product_with_key
    for path in ("/api/v1/runs", "/api/v1/deliveries", "/api/v1/audit"):
        response = client_for(key).get(f"{path}?{query}")
        assert response.status_code == 400, (path, query)
        assert [f["field"] for f in response.json()["error"]["fields"]] == [field], (path, query)
