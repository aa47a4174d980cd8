"""Prometheus counters kept in the database (models.MetricCounter), and the names and buckets Rowbell uses.

Work adds to its counters inside its own transaction (`counters_add`): a delivery attempt's count is committed
with the attempt, or not at all. A histogram is its buckets, sum and count (`histogram_observe`), as the
Prometheus exposition format defines them (https://prometheus.io/docs/instrumenting/exposition_formats/).
apps.dashboard.metrics exposes them, with gauges read at scrape time.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict

from django.db import connection

# The counters Rowbell keeps (each documented where it is exposed, apps.dashboard.metrics).
DELIVERY_ATTEMPTS = "rowbell_delivery_attempts_total"
DELIVERY_ATTEMPT_DURATION = "rowbell_delivery_attempt_duration_seconds"
DELIVERIES_FINISHED = "rowbell_deliveries_finished_total"
RUNS_FINISHED = "rowbell_runs_finished_total"
RETENTION_DELETED = "rowbell_retention_deleted_rows_total"

# Attempt durations, in seconds: from a local receiver's milliseconds to a provider's 30 s timeout.
ATTEMPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Processes add to their own rows: two workers recording at once never wait on each other's row lock.
SHARDS = 16

Series = tuple[str, tuple[tuple[str, str], ...]]


def series(name: str, **labels: str) -> Series:
    """A counter series' key: (name, sorted label pairs)."""
    return name, tuple(sorted((k, str(v)) for k, v in labels.items()))


def labels_text(pairs: tuple[tuple[str, str], ...]) -> str:
    """Label pairs as the exposition format writes them: `a="x",b="y"` (\\, " and newline escaped)."""

    def escaped(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return ",".join(f'{k}="{escaped(v)}"' for k, v in pairs)


def histogram_observe(into: dict[Series, float], name: str, values: list[float], buckets=ATTEMPT_BUCKETS, **labels):
    """Add observations (`values`, in the histogram's unit) to `into` as the histogram `name`'s cumulative
    buckets (`name_bucket{le=...}`, +Inf included), `name_sum` and `name_count`."""
    if not values:
        return
    for bound in buckets:
        into[series(f"{name}_bucket", le=repr(float(bound)), **labels)] += sum(1 for v in values if v <= bound)
    into[series(f"{name}_bucket", le="+Inf", **labels)] += len(values)
    into[series(f"{name}_sum", **labels)] += math.fsum(values)
    into[series(f"{name}_count", **labels)] += len(values)


def increments() -> defaultdict[Series, float]:
    """An empty set of increments to fill and pass to counters_add."""
    return defaultdict(float)


_UPSERT = """
INSERT INTO core_metriccounter (name, labels, shard, value)
SELECT n, l, %s, v FROM unnest(%s::text[], %s::text[], %s::float8[]) AS u(n, l, v) ORDER BY n, l
ON CONFLICT (name, labels, shard) DO UPDATE SET value = core_metriccounter.value + EXCLUDED.value
"""


def counters_add(added: dict[Series, float]) -> None:
    """Add to counters, in one statement, in the caller's transaction (rows in a fixed order: no deadlock)."""
    items = sorted((name, labels_text(pairs), value) for (name, pairs), value in added.items() if value)
    if not items:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            _UPSERT, [os.getpid() % SHARDS, [i[0] for i in items], [i[1] for i in items], [i[2] for i in items]]
        )


def counters_read() -> dict[tuple[str, str], float]:
    """Every counter series, its shards summed: {(name, labels text): value}."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, labels, sum(value) FROM core_metriccounter GROUP BY name, labels")
        return {(name, labels): value for name, labels, value in cursor.fetchall()}
