"""What the home dashboard shows, read in a fixed handful of queries whatever the size of the tables.

Deliveries are read through the (product, created_at) index for the products shown, bucketed in
PostgreSQL; held deliveries through their partial index; failed runs waiting for a decision through
the undecided escalations' partial index; connection health, and the drift of their triggers from what is
published, from the row the beat tick keeps current.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from django.db import connection as db
from django.utils import timezone

from apps.connections.models import Connection
from apps.core.admin_lists import RANGES, Range  # noqa: F401  (the ranges the lists filter by)
from apps.core.ids import uuid_or_none
from apps.deliveries.models import FAILURE_STATUSES, SUCCESS_STATUSES, Delivery, DeliveryStatus
from apps.runs.models import Escalation
from apps.tenants.models import Product

DEFAULT_RANGE = "24h"

FAILED = tuple(FAILURE_STATUSES)
ENDED = tuple(SUCCESS_STATUSES) + FAILED

_BUCKETS = """
SELECT date_bin(%(bucket)s, created_at, %(since)s) AS at, status, count(*)
FROM deliveries_delivery
WHERE product_id = ANY(%(products)s) AND created_at >= %(since)s AND created_at < %(until)s
GROUP BY 1, 2
"""

_LATENCY = """
SELECT date_bin(%(bucket)s, created_at, %(since)s) AS at,
       percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (
           ORDER BY extract(epoch FROM completed_at - created_at) * 1000)
FROM deliveries_delivery
WHERE product_id = ANY(%(products)s) AND created_at >= %(since)s AND created_at < %(until)s
  AND status = ANY(%(sent)s) AND completed_at IS NOT NULL
GROUP BY ROLLUP (1)
"""


def _buckets(since: datetime, until: datetime, step: timedelta) -> list[datetime]:
    out, at = [], since
    while at < until:
        out.append(at)
        at += step
    return out


def _drift(connection: Connection) -> dict:
    """What the dashboard says of a connection whose triggers drifted (Connection.capture_problems, as the
    health tick records them: apps.connections.drift): how many problems, since when, the first one and the
    workflows and endpoints they affect."""
    problems = connection.capture_problems or []
    return {
        "connection": connection,
        "problems": len(problems),
        "since": connection.capture_problems_since,
        "first": problems[0]["detail"] if problems else "",
        "workflows": sorted({w for p in problems for w in p.get("workflows", [])}),
        "endpoints": len({e for p in problems for e in p.get("endpoints", [])}),
    }


def home_figures(*, product_id=None, range_key: str = DEFAULT_RANGE, now: datetime | None = None) -> dict:
    """The dashboard over the range ending now, for one product or all of them: {"range", "ranges", "products",
    "product_id", "chart": {"times", "statuses", "latency"}, "totals", "total", "ended", "failed",
    "failure_rate", "latency", "held", "undecided", "connections", "drift": [_drift of each connection whose
    triggers drifted]}."""
    span = RANGES.get(range_key) or RANGES[DEFAULT_RANGE]
    now = now or timezone.now()
    until = now
    since = until - span.span
    products = list(Product.objects.order_by("name").values_list("id", "name"))
    chosen = [p for p in products if str(p[0]) == str(product_id)] if product_id else products
    ids = [p[0] for p in chosen]
    params = {"bucket": span.bucket, "since": since, "until": until, "products": ids, "sent": list(SUCCESS_STATUSES)}

    buckets = _buckets(since, until, span.bucket)
    index = {at: i for i, at in enumerate(buckets)}
    by_status: dict[str, list[int]] = {}
    totals: dict[str, int] = {}
    with db.cursor() as cursor:
        cursor.execute(_BUCKETS, params)
        for at, status, count in cursor.fetchall():
            series = by_status.setdefault(status, [0] * len(buckets))
            if at in index:
                series[index[at]] += count
            totals[status] = totals.get(status, 0) + count
        cursor.execute(_LATENCY, params)
        latency_rows = cursor.fetchall()
    latency_series = {name: [None] * len(buckets) for name in ("p50", "p90", "p99")}
    overall = {"p50": None, "p90": None, "p99": None}
    for at, values in latency_rows:
        values = [round(v, 1) for v in values] if values else [None, None, None]
        if at is None:  # the rollup row: over the whole range
            overall = dict(zip(("p50", "p90", "p99"), values))
        elif at in index:
            for name, value in zip(("p50", "p90", "p99"), values):
                latency_series[name][index[at]] = value

    ended = sum(totals.get(s, 0) for s in ENDED)
    failed = sum(totals.get(s, 0) for s in FAILED)
    held = Delivery.objects.filter(status=DeliveryStatus.HELD, product_id__in=ids).count()
    undecided = Escalation.objects.filter(decided_at__isnull=True, product_id__in=ids).count()
    connections = list(
        Connection.objects.filter(product_id__in=ids).select_related("product").order_by("product__name", "name")
    )
    return {
        "range": span,
        "ranges": list(RANGES.values()),
        "products": products,
        "product_id": str(product_id) if product_id else "",
        "chart": {"times": [int(at.timestamp()) for at in buckets], "statuses": by_status, "latency": latency_series},
        "totals": dict(sorted(totals.items(), key=lambda kv: -kv[1])),
        "total": sum(totals.values()),
        "ended": ended,
        "failed": failed,
        "failure_rate": round(failed / ended, 4) if ended else None,
        "latency": overall,
        "held": held,
        "undecided": undecided,
        "connections": connections,
        "drift": [_drift(c) for c in connections if c.capture_problems],
    }


def home_figures_cached(*, product_id=None, range_key: str = "") -> dict:
    """home_figures, reused for ROWBELL_DASHBOARD_CACHE_SECONDS per product and range."""
    from django.conf import settings
    from django.core.cache import cache

    range_key = range_key if range_key in RANGES else DEFAULT_RANGE
    product: UUID | str | None = uuid_or_none(product_id) if product_id else None
    if product_id and product is None:
        product = "none"  # not a product id: the figures of no product
    seconds = settings.ROWBELL_DASHBOARD_CACHE_SECONDS
    if seconds <= 0:
        return home_figures(product_id=product, range_key=range_key)
    key = f"rowbell:dashboard:{product or 'all'}:{range_key}"
    figures = cache.get(key)
    if figures is None:
        figures = home_figures(product_id=product, range_key=range_key)
        cache.set(key, figures, seconds)
    return figures
