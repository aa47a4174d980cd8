"""Admin sign-in: wrong passwords lock a username out from one address (an IPv6 client: its /64), with a wait
that doubles while attempts go on, and from every address past a much higher count from all of them; the page
says how long to wait."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/?next=/admin/"


@pytest.fixture
def operator(db):
    return get_user_model().objects.create_superuser("ops", "ops@example.com", "right-password")


def _sign_in(client, password, username="ops"):
    return client.post(LOGIN, {"username": username, "password": password})


def _signed_in(client) -> bool:
    return client.get("/admin/").status_code == 200


def test_wrong_admin_passwords_lock_the_username_out_from_that_address(operator, settings):
    settings.AXES_FAILURE_LIMIT = 5
    settings.ROWBELL_LOGIN_COOLOFF_SECONDS = 600
    client = Client(REMOTE_ADDR="203.0.113.7")
    for _ in range(4):
        response = _sign_in(client, "guess")
        assert response.status_code == 200 and b"Please enter the correct username and password" in response.content

    locked = _sign_in(client, "guess")
    assert locked.status_code == 429 and locked["Retry-After"] == "600"
    page = locked.content.decode()
    assert "Too many failed sign-ins for “ops” from" in page and "Try again in 10\xa0minutes." in page

    # Even the right password waits, and trying again while locked doubles the wait.
    again = _sign_in(client, "right-password")
    assert (
        again.status_code == 429
        and again["Retry-After"] == "1200"
        and "Try again in 20\xa0minutes." in again.content.decode()
    )
    assert not _signed_in(client)
    assert _sign_in(client, "guess")["Retry-After"] == "2400"

    # The same operator from another address is not locked out (a guesser cannot lock an operator out everywhere).
    elsewhere = Client(REMOTE_ADDR="198.51.100.20")
    assert _sign_in(elsewhere, "right-password").status_code == 302 and _signed_in(elsewhere)


def test_the_wait_is_capped_and_the_lock_lifts_once_it_is_over(operator, settings):
    settings.AXES_FAILURE_LIMIT = 2
    settings.ROWBELL_LOGIN_COOLOFF_SECONDS = 60
    settings.ROWBELL_LOGIN_COOLOFF_MAX_SECONDS = 200
    client = Client(REMOTE_ADDR="203.0.113.8")
    waits = [_sign_in(client, "guess").get("Retry-After") for _ in range(5)]
    assert waits == [None, "60", "120", "200", "200"]

    # 200 s later (the attempts are dated back): the lock has lifted and the right password signs in.
    from axes.models import AccessAttempt

    for attempt in AccessAttempt.objects.all():
        attempt.attempt_time -= timedelta(seconds=201)
        attempt.save()
        attempt.expiration.expires_at -= timedelta(seconds=201)
        attempt.expiration.save()
    response = _sign_in(client, "right-password")
    assert response.status_code == 302 and _signed_in(client)
    assert not AccessAttempt.objects.exists()  # a success clears the failures


def test_an_ipv6_client_is_locked_out_across_its_64_network(operator, settings):
    settings.AXES_FAILURE_LIMIT = 3
    for n in range(1, 4):  # three addresses of one /64
        response = _sign_in(Client(REMOTE_ADDR=f"2001:db8:7:8::{n:x}"), "guess")
    assert response.status_code == 429
    assert _sign_in(Client(REMOTE_ADDR="2001:db8:7:8:ffff::1"), "right-password").status_code == 429
    # Another /64 is another client.
    elsewhere = Client(REMOTE_ADDR="2001:db8:7:9::1")
    assert _sign_in(elsewhere, "right-password").status_code == 302 and _signed_in(elsewhere)


def test_failures_spread_over_many_addresses_lock_the_username_out_everywhere(operator, settings):
    settings.AXES_FAILURE_LIMIT = 5
    settings.ROWBELL_LOGIN_FAILURE_LIMIT_PER_USERNAME = 12
    settings.ROWBELL_LOGIN_COOLOFF_SECONDS = 600
    # Four failures from each of three addresses: none reaches the per-address limit, and the twelfth
    # reaches the username's.
    statuses = [
        _sign_in(Client(REMOTE_ADDR=f"198.51.100.{a}"), "guess").status_code for a in range(1, 4) for _ in range(4)
    ]
    assert statuses == [200] * 11 + [429]
    # Now the right password waits too, from an address that never failed; another username is not concerned.
    fresh = Client(REMOTE_ADDR="192.0.2.50")
    locked = _sign_in(fresh, "right-password")
    assert locked.status_code == 429 and locked["Retry-After"] == "600"
    assert "Too many failed sign-ins for “ops” from\n    many addresses" in locked.content.decode()
    assert not _signed_in(fresh)
    get_user_model().objects.create_superuser("other", "other@example.com", "other-password")
    assert _sign_in(fresh, "other-password", username="other").status_code == 302


def test_failures_below_the_username_limit_lock_no_one_else_out(operator, settings):
    settings.AXES_FAILURE_LIMIT = 5
    settings.ROWBELL_LOGIN_FAILURE_LIMIT_PER_USERNAME = 50
    for a in range(1, 11):  # 40 failures from ten addresses
        for _ in range(4):
            assert _sign_in(Client(REMOTE_ADDR=f"198.51.100.{a}"), "guess").status_code == 200
    elsewhere = Client(REMOTE_ADDR="192.0.2.50")
    assert _sign_in(elsewhere, "right-password").status_code == 302 and _signed_in(elsewhere)
