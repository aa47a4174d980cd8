"""How a secret-bearing URL is shown: in API answers, audit rows, the admin, attempt records and logs.

Incoming-webhook URLs (Slack's `https://hooks.slack.com/services/T000/B000/XXXX`, Teams workflow URLs
with a `sig=` query, endpoint URLs with a token in the path) are bearer credentials: whoever reads one
can post to it. Only its origin and its last four characters are ever shown, enough to tell two apart.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .encryption import is_sealed, unseal

_TAIL = 4
# Below this many characters after the origin the tail would give away too much of the secret.
_SHORTEST_WITH_TAIL = 12


def url_mask(url: str) -> str:
    """`scheme://host[:port]/…` followed by the last four characters of the path and query, e.g.
    `https://hooks.slack.com/…a1B2` for `https://hooks.slack.com/services/T0/B0/xyz…a1B2`.

    A sealed value (see apps.core.encryption.seal) is unsealed first. User information (`user:pass@`)
    is never shown; a path and query shorter than twelve characters are shown as `/…` alone; a value
    that is not an absolute http(s) URL is shown as `…` plus its last four characters at most. Never raises.
    """
    if not isinstance(url, str) or not url:
        return ""
    try:
        url = unseal(url)
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except Exception:  # an undecryptable or malformed value still gets a safe display
        parts, host, port = None, "", ""
    if parts is None or parts.scheme not in ("http", "https") or not host:
        return "…" + (url[-_TAIL:] if isinstance(url, str) and len(url) >= _SHORTEST_WITH_TAIL else "")
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    rest = parts.path + (f"?{parts.query}" if parts.query else "")
    tail = rest[-_TAIL:] if len(rest) >= _SHORTEST_WITH_TAIL else ""
    return f"{parts.scheme}://{host}{port}/…{tail}"


def sealed_masked(value):
    """`value` (a JSON document: dicts, lists, strings...) with every sealed string replaced by its
    masked form (`url_mask`); everything else is returned as it is. For showing stored documents
    (recipients, rendered payloads) without their secrets."""
    if isinstance(value, dict):
        return {k: sealed_masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [sealed_masked(v) for v in value]
    if is_sealed(value):
        return url_mask(value)
    return value
