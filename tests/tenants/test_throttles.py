"""API throttles: calls per principal (trigger calls on a budget of their own), failed authentications per
address (IPv6: per /64) and per key prefix (429 with Retry-After, never for a valid key), and an unknown key
prefix that costs the same work as a known one with a wrong secret."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework_api_key.crypto import Sha512ApiKeyHasher

from apps.core import ratelimits
from tests import factories
from tests.conftest import client_for

pytestmark = pytest.mark.django_db

# 20 s into a calendar minute and hour: no window ends while a test runs.
NOW = 1_800_000_020.0


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch):
    monkeypatch.setattr(ratelimits, "_clock", lambda: NOW)


def _keys(client, **extra):
    return client.get("/api/v1/keys", **extra)


def _assert_throttled(response, *, retry_after, field=None):
    assert response.status_code == 429, response.content
    assert response["Retry-After"] == str(retry_after)
    error = response.json()["error"]
    assert error["code"] == "throttled" and error["retry_after"] == retry_after
    assert f"try again in {retry_after} seconds" in error["message"]
    if field:
        assert error["fields"] == [{"field": field, "reason": error["message"]}]
    return error


def test_calls_past_a_products_rate_answer_429_with_retry_after(settings, product_with_key):
    settings.ROWBELL_API_RATE = "3/min"
    product, key = product_with_key
    client = client_for(key)
    assert [_keys(client).status_code for _ in range(3)] == [200, 200, 200]
    error = _assert_throttled(_keys(client), retry_after=40)  # the minute ends 40 s from NOW
    assert "at most 3 per minute" in error["message"]
    # The product's organizations have budgets of their own, and so has every other product.
    _, org_key = factories.make_organization(product)
    assert _keys(client_for(org_key)).status_code == 200
    assert _keys(client_for(factories.make_product("Other")[1])).status_code == 200


def test_the_trigger_call_has_its_own_rate_and_budget(settings, product_with_key):
    settings.ROWBELL_API_RATE = "2/h"
    settings.ROWBELL_TRIGGER_RATE = "3/min"
    product, key = product_with_key
    factories.make_workflow(product, key="welcome", steps=[factories.email_step()])
    client = client_for(key)
    body = {"workflow": "welcome", "to": [{"id": "u1", "email": "u1@example.com"}]}
    # Past the general rate, trigger calls go on up to their own.
    assert [_keys(client).status_code for _ in range(3)] == [200, 200, 429]
    assert [client.post("/api/v1/trigger", body, format="json").status_code for _ in range(3)] == [202, 202, 202]
    error = _assert_throttled(client.post("/api/v1/trigger", body, format="json"), retry_after=40)
    assert "Too many trigger calls for this product (at most 3 per minute, ROWBELL_TRIGGER_RATE)" in error["message"]


def test_the_default_trigger_rate_is_far_above_the_general_one(settings):
    trigger = ratelimits.Rate.parse(settings.ROWBELL_TRIGGER_RATE)
    general = ratelimits.Rate.parse(settings.ROWBELL_API_RATE)
    assert trigger.limit / trigger.seconds >= 1000  # Rowbell's own target: 1,000 deliveries a second
    assert general == ratelimits.Rate(limit=1200, seconds=60)


def test_failed_authentications_from_one_address_answer_429_but_a_valid_key_goes_on(settings, product_with_key):
    settings.ROWBELL_AUTH_FAILURES_PER_IP = "3/10m"
    product, key = product_with_key
    factories.make_workflow(product, key="welcome", steps=[factories.email_step()])
    prefix = key.split(".")[0]
    guesses = [client_for(f"{prefix}.wrong{n}") for n in range(2)] + [client_for("unknown.secret")]
    assert [_keys(c).status_code for c in guesses] == [401, 401, 401]
    # The fourth failure, on the trigger call as anywhere else, answers 429...
    error = _assert_throttled(
        client_for("unknown.again").post("/api/v1/trigger", {}, format="json"), retry_after=580, field="Authorization"
    )
    assert "failed authentications from your address" in error["message"]
    _assert_throttled(_keys(client_for("unknown.more")), retry_after=580, field="Authorization")
    # ...while the valid key behind the same address (a rotated fleet, a shared NAT) is never refused.
    assert _keys(client_for(key)).status_code == 200
    assert (
        client_for(key).post("/api/v1/trigger", {"workflow": "welcome", "to": ["u1"]}, format="json").status_code == 202
    )
    # Another address has its own count.
    assert _keys(client_for("unknown.secret"), REMOTE_ADDR="10.1.2.3").status_code == 401


def test_an_ipv6_client_is_counted_per_64_network(settings, product_with_key):
    settings.ROWBELL_AUTH_FAILURES_PER_IP = "2/10m"
    statuses = [
        _keys(client_for("unknown.secret"), REMOTE_ADDR=f"2001:db8:1:2::{n:x}").status_code for n in range(1, 4)
    ]
    assert statuses == [401, 401, 429]  # three addresses of one /64: one client
    assert _keys(client_for("unknown.secret"), REMOTE_ADDR="2001:db8:1:3::1").status_code == 401  # another /64


@pytest.mark.parametrize(
    ("remote_addr", "client"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::"),
        ("2001:DB8:1:2::1", "2001:db8:1:2::"),
        ("::ffff:192.0.2.1", "192.0.2.1"),  # IPv4-mapped: the IPv4 client
        ("not-an-address", "not-an-address"),
    ],
)
def test_the_client_address_is_the_ipv4_address_or_the_ipv6_64_network(rf, remote_addr, client):
    assert ratelimits.client_ip(rf.get("/", REMOTE_ADDR=remote_addr)) == client


def test_failed_authentications_for_one_prefix_answer_429_but_its_owner_goes_on(settings, product_with_key):
    settings.ROWBELL_AUTH_FAILURES_PER_PREFIX = "2/h"
    _, key = product_with_key
    prefix = key.split(".")[0]
    statuses = [_keys(client_for(f"{prefix}.wrong"), REMOTE_ADDR=f"10.0.0.{n}").status_code for n in range(3)]
    assert statuses == [401, 401, 429]  # from three addresses
    _assert_throttled(
        _keys(client_for(f"{prefix}.wrong"), REMOTE_ADDR="10.0.0.9"), retry_after=3580, field="Authorization"
    )
    # Whoever knows a prefix cannot lock its owner out.
    assert _keys(client_for(key)).status_code == 200
    # A prefix that no key has is counted alike: the answers do not tell which prefixes exist.
    assert [_keys(client_for("nokey123.wrong"), REMOTE_ADDR=f"10.0.1.{n}").status_code for n in range(3)] == [
        401,
        401,
        429,
    ]


def test_an_unreachable_counter_store_lets_calls_through(settings, product_with_key):
    settings.CACHES = {
        **settings.CACHES,
        "ratelimits": {**settings.CACHES["ratelimits"], "LOCATION": "redis://127.0.0.1:1/0"},
    }
    settings.ROWBELL_API_RATE = "1/h"
    client = client_for(product_with_key[1])
    assert [_keys(client).status_code for _ in range(3)] == [200, 200, 200]


@pytest.fixture
def hash_checks(monkeypatch):
    """Counts SHA-512 hash computations of presented keys (the hasher's verify() goes through encode())."""
    calls = []
    encode = Sha512ApiKeyHasher.encode

    def counting(self, password, salt):
        calls.append(password)
        return encode(self, password, salt)

    monkeypatch.setattr(Sha512ApiKeyHasher, "encode", counting)
    return calls


def _work(hash_checks, call) -> tuple:
    hash_checks.clear()
    with CaptureQueriesContext(connection) as queries:
        response = call()
    return response.status_code, response.json(), len(hash_checks), len(queries)


@pytest.mark.parametrize("path", ["/api/v1/keys", "/api/v1/trigger"])
def test_an_unknown_prefix_costs_the_same_work_as_a_known_one_with_a_wrong_secret(path, product_with_key, hash_checks):
    product, key = product_with_key
    factories.make_workflow(product, key="welcome", steps=[factories.email_step()])
    # The trigger call keeps recently used keys' hashes in memory: a real call puts this one there.
    assert (
        client_for(key).post("/api/v1/trigger", {"workflow": "welcome", "to": ["u1"]}, format="json").status_code == 202
    )
    prefix, secret = key.split(".")
    wrong_secret = client_for(f"{prefix}.{secret[::-1]}")
    unknown_prefix = client_for(f"{prefix[::-1]}x.{secret}")

    def call(client):
        return client.post(path, {}, format="json") if path.endswith("trigger") else client.get(path)

    known = _work(hash_checks, lambda: call(wrong_secret))
    unknown = _work(hash_checks, lambda: call(unknown_prefix))
    assert known[0] == unknown[0] == 401 and known[1] == unknown[1]
    assert known[2] == unknown[2] >= 1, "one path checks a hash the other does not"
    assert known[3] == unknown[3], "one path queries the database more than the other"


def test_rates_are_read_as_documented_and_a_typo_fails_the_system_checks(settings):
    from apps.core.checks import rate_limits_check
    from apps.core.ratelimits import Rate

    assert Rate.parse("1200/min") == Rate(limit=1200, seconds=60)
    assert Rate.parse("30/10m") == Rate(limit=30, seconds=600)
    assert Rate.parse("5/s").describe() == "5 per second" and Rate.parse("20/10m").describe() == "20 per 10 minutes"
    assert rate_limits_check(None) == []
    settings.ROWBELL_API_RATE = "lots"
    [error] = rate_limits_check(None)
    assert error.id == "rowbell.E004" and error.msg.startswith("ROWBELL_API_RATE: 'lots' is not a rate")
    settings.ROWBELL_API_RATE = "1200/min"
    settings.ROWBELL_TRIGGER_RATE = "1000/sec/"
    [error] = rate_limits_check(None)
    assert error.msg.startswith("ROWBELL_TRIGGER_RATE: '1000/sec/' is not a rate")
