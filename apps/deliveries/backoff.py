import random

from django.conf import settings


def retry_delay(
    attempt: int,
    *,
    retry_after: float | None = None,
    rng: random.Random | None = None,
    base: float | None = None,
    cap: float | None = None,
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based).

    Exponential (base * 2**(attempt-1), capped) with "equal jitter": a uniform draw between half the
    step and the full step, so retries from one outage spread out but never come back early.
    A `Retry-After` from the receiver is a floor, itself capped by ROWBELL_RETRY_AFTER_MAX_SECONDS.
    `base` and `cap` are a workflow's own policy; the settings are the default.
    """
    base = settings.ROWBELL_RETRY_BASE_SECONDS if base is None else base
    cap = settings.ROWBELL_RETRY_MAX_SECONDS if cap is None else cap
    step = min(cap, base * 2 ** min(attempt - 1, 60))
    delay = (rng or random).uniform(step / 2, step)
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.ROWBELL_RETRY_AFTER_MAX_SECONDS))
    return delay
