"""Celery hints: small messages that name a task and the ids it should look at.

A hint is only a wake-up: the database says what is true, and a lost hint is re-sent by the
reconciler. On Redis, hints are written as Celery protocol v2 messages
(https://docs.celeryq.dev/en/stable/internals/protocol.html) in kombu's Redis envelope with a single
LPUSH: the same message `apply_async` writes, for about a sixth of the CPU (0.13 ms against 0.78 ms
per message, measured on the trigger API's hot path). tests/core/test_hints.py compares the envelope
with Celery's own, and every end-to-end test runs real workers on these messages.

The enqueue policy, one for every caller: work is enqueued after the transaction that records it
commits (`hint_on_commit`, `hint_many_on_commit`), and that never raises. When the broker is
unreachable or refuses, the committed rows stay, the caller carries on (a request, a worker task, the
`listener` or `dispatcher` loop), one warning names the tasks and ids, and the reconcilers (beat ticks)
send the hints again for work the database shows nobody picked up. Direct sends in a reconciler's loop
use `hint_many_now`, same policy, which says whether the hints went out. `hint` and `hint_many` raise;
they are the building blocks, not for callers that hold committed work.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import uuid
from functools import lru_cache

from django.conf import settings
from django.db import transaction

logger = logging.getLogger(__name__)

_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


@lru_cache(maxsize=1)
def _origin() -> str:
    return f"{os.getpid()}@{socket.gethostname()}"


def message(task: str, args: list, queue: str) -> dict:
    """The Celery protocol v2 message, in kombu's Redis envelope, of `task` with positional `args` for
    `queue`: a JSON-able dict with a fresh task id, as `apply_async` would LPUSH it."""
    task_id = str(uuid.uuid4())
    body = json.dumps([args, {}, _EMBED], separators=(", ", ": "))
    return {
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": task,
            "id": task_id,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": task_id,
            "parent_id": None,
            "argsrepr": repr(args)[:1024],
            "kwargsrepr": "{}",
            "origin": _origin(),
            "ignore_result": True,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        },
        "properties": {
            "correlation_id": task_id,
            "reply_to": "",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }


# The hints' Redis client fails fast: a hint is a single LPUSH (a pipeline of them for many), answered in
# well under a millisecond, and an unsent hint costs nothing but latency (the reconciler sends it again), so
# a process must not wait long on a broker that does not answer. A refused connection fails at once; a
# broker that accepts but does not answer costs at most READ_TIMEOUT_SECONDS per send.
CONNECT_TIMEOUT_SECONDS = 1.0
READ_TIMEOUT_SECONDS = 2.0
# Ids named per failed send in the warning (a reconciler's batch may hold thousands).
_LOGGED_IDS = 20

Hint = tuple[str, list, str]  # (task name, its arguments, queue)

_redis = None
_redis_key = None


def _client():
    """The process's Redis client for hints: one per process and broker URL (rebuilt after a fork)."""
    global _redis, _redis_key
    key = (os.getpid(), settings.CELERY_BROKER_URL)
    if _redis is None or _redis_key != key:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # One immediate retry on a connection error only: it replaces a pooled connection that a broker
        # restart closed. A timeout is not retried (it would double the wait on a broker that hangs).
        _redis = redis.Redis.from_url(
            settings.CELERY_BROKER_URL,
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            socket_timeout=READ_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
        )
        _redis_key = key
    return _redis


def _on_redis() -> bool:
    return settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://", "unix://"))


def hint(task: str, args: list, *, queue: str) -> None:
    """Send one hint now: `task` (a Celery task name) with positional `args` (JSON-able) on `queue`.

    Raises whatever the broker client raises (redis.RedisError, kombu's OperationalError). For the
    policy that never raises, use `hint_many_now`, or `hint_on_commit` inside a transaction."""
    if _on_redis():
        _client().lpush(queue, json.dumps(message(task, args, queue)))
    else:
        from config.celery_app import app

        app.send_task(task, args=args, queue=queue)


def hint_many(hints: list[Hint]) -> None:
    """Send several hints, each (task, args, queue), in one round trip. Raises like `hint`."""
    if not hints:
        return
    if _on_redis():
        pipe = _client().pipeline(transaction=False)
        for task, args, queue in hints:
            pipe.lpush(queue, json.dumps(message(task, args, queue)))
        pipe.execute()
    else:
        for task, args, queue in hints:
            hint(task, args, queue=queue)


def _described(hints: list[Hint]) -> str:
    """The hints as 'task to queue, ids [...]' per task and queue, naming at most _LOGGED_IDS ids in all."""
    by_task: dict[tuple[str, str], list] = {}
    for task, args, queue in hints:
        ids = args[0] if len(args) == 1 and isinstance(args[0], list) else args
        by_task.setdefault((task, queue), []).extend(ids)
    parts, left = [], _LOGGED_IDS
    for (task, queue), ids in by_task.items():
        shown = ids[:left]
        left -= len(shown)
        more = len(ids) - len(shown)
        parts.append(f"{task} to {queue}, ids {shown}" + (f" and {more} more" if more else ""))
    return "; ".join(parts)


def hint_many_now(hints: list[Hint]) -> bool:
    """Send hints (task, args, queue) now, in one round trip, under the enqueue policy: never raises.

    Returns True when the broker took them all, False when it did not: the failure is logged once, as a
    warning naming the tasks, queues and ids and the broker's error (no traceback), and the work is left
    to the reconciler, which sends hints again for work in the database that nobody picked up. For
    reconciler loops and other direct sends that must go on whatever the broker does."""
    if not hints:
        return True
    try:
        hint_many(hints)
    except Exception as exc:  # the broker's failure in any form: the database stays the truth
        logger.warning(
            "Could not send %d hint%s (%s): %s: %s. Left for the reconciler.",
            len(hints),
            "" if len(hints) == 1 else "s",
            _described(hints),
            exc.__class__.__name__,
            str(exc).rstrip("."),
        )
        return False
    return True


def hint_many_on_commit(hints: list[Hint]) -> None:
    """Send hints (task, args, queue) once the current transaction commits, in one round trip (at once in
    autocommit); nothing if it rolls back.

    The enqueue policy: never raises, neither here nor after commit, whatever the broker does. What was
    committed stays committed and the caller carries on; a failed send is logged once (`hint_many_now`)
    and the reconciler sends the hints again later."""
    hints = list(hints)
    if hints:
        transaction.on_commit(lambda: hint_many_now(hints))


def hint_on_commit(task: str, args: list, *, queue: str) -> None:
    """Send one hint once the current transaction commits: `hint_many_on_commit` for a single hint, under
    the same policy (never raises; a failure is logged once and left for the reconciler)."""
    hint_many_on_commit([(task, args, queue)])
