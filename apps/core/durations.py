"""Durations as people write them in definitions and settings: '90s', '15m', '2h', '1d12h', or seconds."""

from __future__ import annotations

import re

DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
MAX_DURATION = 366 * 24 * 3600
DURATION_SAYS = "A duration such as '90s', '15m', '2h', '1d12h' (at most 366 days)"


def duration_seconds(value) -> int | float | None:
    """Seconds in '90s', '15m', '2h', '1d12h' or a plain number of seconds; None if not a duration (zero,
    negative, over 366 days, or not one of these)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value if 0 < value <= MAX_DURATION else None
    if not isinstance(value, str) or not value:
        return None
    match = DURATION.match(value.strip())
    if not match or not any(match.groups()):
        return None
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    total = days * 86400 + hours * 3600 + minutes * 60 + seconds
    return total if 0 < total <= MAX_DURATION else None
