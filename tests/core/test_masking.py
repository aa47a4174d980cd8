"""The one way a secret-bearing URL is shown."""

import pytest

from apps.core.encryption import seal
from apps.core.masking import sealed_masked, url_mask


@pytest.mark.parametrize(
    "url, shown",
    [
        ("https://hooks.slack.com/services/T000/B000/XXXXa1B2", "https://hooks.slack.com/…a1B2"),
        ("https://user:pw@example.com:8443/hook?token=abcdef123456", "https://example.com:8443/…3456"),
        ("https://example.com/short", "https://example.com/…"),
        ("http://[2001:db8::1]/services/abcdefghijkl", "http://[2001:db8::1]/…ijkl"),
        ("not a url but a long secret value", "…alue"),
        ("", ""),
    ],
)
def test_url_mask_shows_the_origin_and_the_last_four_characters(url, shown):
    assert url_mask(url) == shown


def test_sealed_values_are_masked_wherever_they_sit(settings):
    url = "https://hooks.slack.com/services/T000/B000/XXXXa1B2"
    document = {"id": "u1", "chat_webhook": seal(url), "tags": [seal(url), 3], "name": "Ada"}
    assert sealed_masked(document) == {
        "id": "u1",
        "chat_webhook": "https://hooks.slack.com/…a1B2",
        "tags": ["https://hooks.slack.com/…a1B2", 3],
        "name": "Ada",
    }
