"""Delivery channels: one class per kind behind `Channel`, found by kind in the registry.

Adding a channel is a new module with a `Channel` subclass registered here; it needs no migration.
"""

from .base import Channel, DeliveryError, Rendered, SendResult, channel_get, channel_kinds, register
from .email import EmailChannel
from .provided import ChatChannel, PushChannel, SmsChannel
from .webhook import WebhookChannel

register(WebhookChannel())
register(EmailChannel())
register(SmsChannel())
register(PushChannel())
register(ChatChannel())

__all__ = ["Channel", "DeliveryError", "Rendered", "SendResult", "channel_get", "channel_kinds", "register"]
