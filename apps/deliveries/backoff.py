"""When a failed attempt is tried again: a retry schedule (the default, per channel), or a workflow's
exponential back-off.

A schedule is the seconds to wait before each retry, e.g. the webhook default
[5, 300, 1800, 7200, 18000, 36000, 36000] (Svix's published schedule: https://docs.svix.com/retries): the
first attempt is at once, and a delivery makes one attempt more than its schedule has delays. Each delay is a
floor, with up to 10% jitter added, so that the retries of one outage spread out but never come back early. A
receiver's `Retry-After` is a floor too, capped by ROWBELL_RETRY_AFTER_MAX_SECONDS.
"""

from __future__ import annotations

import random

from django.conf import settings

JITTER = 0.1


def default_schedules() -> dict[str, list[float]]:
    """The service's schedule per channel, and `step` for a run's step retries: {name: [seconds]}."""
    return {
        "webhook": settings.ROWBELL_RETRY_SCHEDULE_WEBHOOK,
        "email": settings.ROWBELL_RETRY_SCHEDULE_EMAIL,
        "sms": settings.ROWBELL_RETRY_SCHEDULE_SMS,
        "push": settings.ROWBELL_RETRY_SCHEDULE_PUSH,
        "chat": settings.ROWBELL_RETRY_SCHEDULE_CHAT,
        "step": settings.ROWBELL_RETRY_SCHEDULE_STEP,
    }


def retry_schedule(
    kind: str, *, policy: dict | None = None, endpoint_schedule: list | None = None
) -> list[float] | None:
    """The schedule of a delivery on channel `kind` (or of a run's steps: "step"), in seconds; None when the
    workflow's policy is exponential (it names `backoff` or `max_backoff`: retry_delay applies).

    In order: the workflow's `retry.schedule`; else the webhook endpoint's own schedule (`endpoint_schedule`)
    for a webhook; else the service's default for the channel (default_schedules). A workflow's
    `retry.max_attempts` alone cuts that schedule to max_attempts - 1 delays, or extends it with its last
    delay.
    """
    policy = policy or {}
    if policy.get("schedule") is not None:
        return [float(s) for s in policy["schedule"]]
    if policy.get("backoff") is not None or policy.get("max_backoff") is not None:
        return None
    defaults = default_schedules()
    if kind == "webhook" and endpoint_schedule is not None:  # the endpoint's own, [] (one attempt) included
        schedule = [float(s) for s in endpoint_schedule]
    else:
        schedule = [float(s) for s in (defaults.get(kind) or defaults["webhook"])]
    attempts = policy.get("max_attempts")
    if attempts:
        retries = attempts - 1
        schedule = (schedule + [schedule[-1] if schedule else 0.0] * retries)[:retries]
    return schedule


def scheduled_delay(
    schedule: list[float],
    attempt: int,
    *,
    max_attempts: int,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based) of a delivery with `max_attempts`
    whose retries follow `schedule`: the delay for the retries left (a replayed delivery, given a fresh set of
    attempts, starts the schedule again), plus up to 10% jitter; `retry_after` is a floor."""
    if not schedule:
        delay = 0.0
    else:
        index = min(max(len(schedule) - (max_attempts - attempt), 0), len(schedule) - 1)
        delay = schedule[index] * (rng or random).uniform(1.0, 1.0 + JITTER)
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.ROWBELL_RETRY_AFTER_MAX_SECONDS))
    return delay


def retry_delay(
    attempt: int,
    *,
    retry_after: float | None = None,
    rng: random.Random | None = None,
    base: float | None = None,
    cap: float | None = None,
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based), for a workflow's exponential policy.

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
