"""`GET /metrics`: Rowbell's Prometheus exposition (the prometheus-client package writes it).

Counters and histograms come from the database (apps.core.metrics: committed with the work they count, the
same whichever process or host did it); gauges are read at scrape time from indexed counts, the connections'
stored health (refreshed by beat every ROWBELL_HEALTH_INTERVAL; the scrape never reaches a customer database)
and the broker's queue lengths.

The endpoint answers only a request carrying `Authorization: Bearer <ROWBELL_METRICS_TOKEN>`; without the
setting it is off (404), so metrics are never public by accident.
"""

from __future__ import annotations

import hmac
import logging
import re

from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from apps.core import metrics

logger = logging.getLogger(__name__)

# What each counter counts, for the exposition's HELP lines.
COUNTERS = {
    metrics.DELIVERY_ATTEMPTS: ("Delivery attempts, by channel, provider and outcome (success, failure).",),
    metrics.DELIVERIES_FINISHED: ("Deliveries that reached a final status (delivered, sent, failed), by channel.",),
    metrics.RUNS_FINISHED: ("Runs that finished, by status (completed, failed, cancelled).",),
    metrics.RETENTION_DELETED: ("Rows the retention deleted, by table.",),
}
HISTOGRAMS = {
    metrics.DELIVERY_ATTEMPT_DURATION: "How long delivery attempts took, in seconds, by channel and provider.",
}

_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _labels(text: str) -> dict[str, str]:
    return {k: v.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\") for k, v in _LABEL.findall(text)}


def _queue_lengths() -> dict[str, int | None]:
    """Messages waiting in each Celery queue of the broker (Redis lists); None when the broker cannot answer."""
    import redis

    queues = ("high", "normal", "low")
    try:
        client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=2, socket_connect_timeout=2)
        with client.pipeline() as pipe:
            for queue in queues:
                pipe.llen(queue)
            return dict(zip(queues, pipe.execute(), strict=True))
    except redis.RedisError as exc:
        logger.warning("Metrics: the broker did not answer: %s", exc)
        return dict.fromkeys(queues)


# One count per status, so that each uses its status's partial index (an IN list cannot).
_COUNTS = "\nUNION ALL\n".join(
    [
        f"SELECT 'run', '{status}', count(*) FROM runs_run WHERE status = '{status}'"
        for status in ("queued", "running", "waiting")
    ]
    + [
        f"SELECT 'delivery', '{status}', count(*) FROM deliveries_delivery WHERE status = '{status}'"
        for status in ("queued", "sending", "held")
    ]
    + ["SELECT 'request', 'accepted', count(*) FROM runs_triggerrequest WHERE status = 'accepted'"]
)


class RowbellCollector:
    """Everything `GET /metrics` shows, read when Prometheus scrapes."""

    def collect(self):
        yield from self._counters()
        yield from self._gauges()

    def _counters(self):
        by_name: dict[str, list[tuple[dict, float]]] = {}
        for (name, labels), value in metrics.counters_read().items():
            by_name.setdefault(name, []).append((_labels(labels), value))
        for name, (help_text,) in COUNTERS.items():
            series = by_name.get(name, [])
            keys = sorted({k for labels, _ in series for k in labels})
            family = CounterMetricFamily(name.removesuffix("_total"), help_text, labels=keys)
            for labels, value in series:
                family.add_metric([labels.get(k, "") for k in keys], value)
            yield family
        for name, help_text in HISTOGRAMS.items():
            groups: dict[tuple, dict] = {}
            for suffix in ("_bucket", "_sum", "_count"):
                for labels, value in by_name.get(name + suffix, []):
                    le = labels.pop("le", None)
                    group = groups.setdefault(tuple(sorted(labels.items())), {"buckets": [], "sum": 0.0})
                    if suffix == "_bucket":
                        group["buckets"].append((le, value))
                    elif suffix == "_sum":
                        group["sum"] = value
            keys = sorted({k for key in groups for k, _ in key})
            family = HistogramMetricFamily(name, help_text, labels=keys)
            for key, group in sorted(groups.items()):
                labels = dict(key)
                buckets = sorted(group["buckets"], key=lambda b: float(b[0]))
                family.add_metric([labels.get(k, "") for k in keys], buckets, group["sum"])
            yield family

    def _gauges(self):
        from apps.connections.models import Connection

        with connection.cursor() as cursor:
            cursor.execute(_COUNTS)
            counts = cursor.fetchall()
        families = {
            "run": GaugeMetricFamily("rowbell_runs", "Runs not finished, by status.", labels=["status"]),
            "delivery": GaugeMetricFamily(
                "rowbell_deliveries",
                "Deliveries waiting to be sent, being sent, or held for review.",
                labels=["status"],
            ),
        }
        seen = {kind: set() for kind in families}
        accepted = 0
        for kind, status, count in counts:
            if kind == "request":
                accepted = count
                continue
            families[kind].add_metric([status], count)
            seen[kind].add(status)
        for kind, statuses in (("run", ("queued", "running", "waiting")), ("delivery", ("queued", "sending", "held"))):
            for status in statuses:
                if status not in seen[kind]:
                    families[kind].add_metric([status], 0)
        yield from families.values()
        yield GaugeMetricFamily(
            "rowbell_requests_accepted", "Trigger requests accepted and not started yet.", value=accepted
        )

        depth = GaugeMetricFamily("rowbell_queue_messages", "Messages waiting in each broker queue.", labels=["queue"])
        for queue, length in _queue_lengths().items():
            if length is not None:
                depth.add_metric([queue], length)
        yield depth

        now = timezone.now()
        backlog = GaugeMetricFamily(
            "rowbell_pickup_backlog_events",
            "Committed events in a connection's event log not picked up yet (as last measured).",
            labels=["connection", "name"],
        )
        lag = GaugeMetricFamily(
            "rowbell_pickup_lag_seconds",
            "Age of the oldest event not picked up yet, per connection (as last measured).",
            labels=["connection", "name"],
        )
        since_poll = GaugeMetricFamily(
            "rowbell_pickup_last_poll_age_seconds",
            "Seconds since a connection's event log was last polled.",
            labels=["connection", "name"],
        )
        for connection_id, name, count, seconds, polled in Connection.objects.filter(
            capture_installed_at__isnull=False
        ).values_list("id", "name", "backlog", "lag_seconds", "last_poll_at"):
            labels = [str(connection_id), name]
            if count is not None:
                backlog.add_metric(labels, count)
            if seconds is not None:
                lag.add_metric(labels, seconds)
            if polled is not None:
                since_poll.add_metric(labels, (now - polled).total_seconds())
        yield from (backlog, lag, since_poll)


def _authorized(request) -> bool:
    given = request.headers.get("Authorization", "")
    scheme, _, token = given.partition(" ")
    expected = settings.ROWBELL_METRICS_TOKEN.strip().encode()  # a token read from a file may end in a newline
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected)


@require_GET
def metrics_view(request):
    """The exposition, for a scrape with the bearer token (404 when ROWBELL_METRICS_TOKEN is unset; 401 with the
    reason otherwise)."""
    if not settings.ROWBELL_METRICS_TOKEN.strip():
        return JsonResponse(
            {"error": {"code": "not_found", "message": "Metrics are off: set ROWBELL_METRICS_TOKEN to turn them on."}},
            status=404,
        )
    if not _authorized(request):
        response = JsonResponse(
            {
                "error": {
                    "code": "not_authenticated",
                    "message": "Send the metrics token: Authorization: Bearer <ROWBELL_METRICS_TOKEN>.",
                }
            },
            status=401,
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RowbellCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
