"""Deliveries' services, one module per concern; the public ones are importable from here.

- history: status_events_record
- creating: delivery_build, deliveries_write, deliveries_enqueue_*
- endpoints: webhook endpoints, their health and replay
- review: sandbox release and discard
- sending: claim, send, record; dispatch and reconcile
- provider_configs: provider configuration per product and organization
"""

from .creating import deliveries_enqueue_by_priority, deliveries_enqueue_on_commit, deliveries_write, delivery_build
from .endpoints import (
    DEFAULT_SECRET_OVERLAP_SECONDS,
    MAX_REPLAY,
    MAX_SECRET_OVERLAP_SECONDS,
    deliveries_replay,
    endpoints_disable,
    replayable_deliveries,
    webhook_endpoint_create,
    webhook_endpoint_disable,
    webhook_endpoint_disabled_notify,
    webhook_endpoint_enable,
    webhook_endpoint_enable_queued,
    webhook_endpoint_enable_request,
    webhook_endpoint_rotate_secret,
    webhook_endpoint_update,
    webhook_endpoint_url_check,
)
from .history import status_events_record
from .provider_configs import (
    provider_config_check,
    provider_config_delete,
    provider_config_put,
    provider_config_rotate_events_secret,
)
from .review import MAX_REVIEW_BATCH, at_most_a_batch, deliveries_discard, deliveries_release
from .sending import deliveries_dispatch_due, deliveries_reconcile, deliveries_send, deliveries_send_claimed

__all__ = [
    "DEFAULT_SECRET_OVERLAP_SECONDS",
    "MAX_REPLAY",
    "MAX_REVIEW_BATCH",
    "MAX_SECRET_OVERLAP_SECONDS",
    "at_most_a_batch",
    "deliveries_discard",
    "deliveries_dispatch_due",
    "deliveries_enqueue_by_priority",
    "deliveries_enqueue_on_commit",
    "deliveries_reconcile",
    "deliveries_release",
    "deliveries_replay",
    "deliveries_send",
    "deliveries_send_claimed",
    "deliveries_write",
    "delivery_build",
    "endpoints_disable",
    "provider_config_check",
    "provider_config_delete",
    "provider_config_put",
    "provider_config_rotate_events_secret",
    "replayable_deliveries",
    "status_events_record",
    "webhook_endpoint_create",
    "webhook_endpoint_disable",
    "webhook_endpoint_disabled_notify",
    "webhook_endpoint_enable",
    "webhook_endpoint_enable_queued",
    "webhook_endpoint_enable_request",
    "webhook_endpoint_rotate_secret",
    "webhook_endpoint_update",
    "webhook_endpoint_url_check",
]
