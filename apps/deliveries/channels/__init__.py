"""Delivery channels: one package per kind, each a vertical slice behind `Channel`, found by kind here.

A channel's package (`channels/<kind>/`) owns its `Channel` subclass (step fields, rendering, sending), its
providers (`providers.py`, registered with `providers.provider_register`), the recipient fields it reads and
their rules (`recipient_errors`) and how the review queue previews its messages (`preview`). Adding a
channel is a new package registered below; it needs no migration.
"""

from .base import Channel, DeliveryError, Rendered, SendResult, channel_get, channel_kinds, register
from .chat import ChatChannel
from .email import EmailChannel
from .push import PushChannel
from .sms import SmsChannel
from .webhook import WebhookChannel

register(WebhookChannel())
register(EmailChannel())
register(SmsChannel())
register(PushChannel())
register(ChatChannel())

__all__ = ["Channel", "DeliveryError", "Rendered", "SendResult", "channel_get", "channel_kinds", "register"]
