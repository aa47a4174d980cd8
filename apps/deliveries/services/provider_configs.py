"""Provider configuration per product (and organization): check, save, rotate, delete."""

from __future__ import annotations

import json
import logging

from django.db import transaction

from apps.audit.services import audit_record
from apps.core.exceptions import InvalidInput, flatten_errors

logger = logging.getLogger(__name__)


# --- Providers ----------------------------------------------------------------------------------


def provider_config_check(*, channel: str, provider: str, credentials, options) -> dict:
    """Credentials and options checked against the provider's own fields: {"credentials", "options"},
    normalized. Raises InvalidInput naming each field at fault (`credentials.auth_token`...)."""
    from ..channels.providers import PROVIDERS, providers_of

    if not providers_of(channel):
        channels = sorted({c for c, _ in PROVIDERS})
        raise InvalidInput(f"Channels with providers: {', '.join(channels)}.", field="channel")
    if provider not in providers_of(channel):
        raise InvalidInput(f"Must be one of: {', '.join(providers_of(channel))}.", field="provider")
    impl = PROVIDERS[(channel, provider)]
    errors = {}
    checked = {}
    for name, serializer_class, value in (
        ("credentials", impl.Credentials, credentials),
        ("options", impl.Options, options),
    ):
        if not isinstance(value, dict):
            errors[name] = "Must be an object."
            continue
        serializer = serializer_class(data=value)
        if serializer.is_valid():
            checked[name] = dict(serializer.validated_data)
        else:
            for error in flatten_errors(serializer.errors, name):
                errors.setdefault(error["field"], error["reason"])
        unknown = sorted(set(value) - set(serializer_class().fields))
        if unknown:
            errors[f"{name}.{unknown[0]}"] = f"Unknown field for {provider}."
    if errors:
        raise InvalidInput("The provider configuration is not valid.", fields=errors)
    return checked


def provider_config_put(*, product, channel: str, provider: str, credentials, options, actor: str, organization=None):
    """Set the provider of a channel for a product (or one of its organizations), replacing any before.
    Credentials and options are checked against the provider's own fields; the credentials are stored
    encrypted and never returned. A provider that reports events (apps.deliveries.provider_events) gets
    its own event webhook the first time: its basic-auth secret is on the returned object as
    `events_secret_new`, once; a later change keeps the URL and the secret."""
    from ..models import ProviderConfig
    from ..provider_events import EVENT_PROVIDERS, events_credentials_new

    checked = provider_config_check(channel=channel, provider=provider, credentials=credentials, options=options)
    with transaction.atomic():
        config, created = ProviderConfig.objects.select_for_update().get_or_create(
            product=product,
            organization=organization,
            channel=channel,
            defaults={
                "provider": provider,
                "credentials": json.dumps(checked["credentials"]),
                "options": checked["options"],
            },
        )
        if not created:
            config.provider, config.options = provider, checked["options"]
            config.credentials = json.dumps(checked["credentials"])
            config.save()
        config.events_secret_new = ""
        if provider in EVENT_PROVIDERS and channel == "email" and not config.events_token:
            config.events_token, config.events_secret = events_credentials_new()
            config.save(update_fields=["events_token", "events_secret"])
            config.events_secret_new = config.events_secret
        audit_record(
            action="provider.configured",
            target_type="provider",
            target_id=config.id,
            product_id=product.id,
            organization_id=organization.id if organization else None,
            actor=actor,
            data={
                "channel": channel,
                "provider": provider,
                "options": checked["options"],
                "credentials_set": sorted(k for k, v in checked["credentials"].items() if v not in ("", None)),
            },
        )
    return config


def provider_config_rotate_events_secret(*, config, actor: str):
    """Give a provider configuration's event webhook a new basic-auth secret (and its URL token, if it
    had none yet), returned on the object as `events_secret_new`, once. The previous secret stops working
    at once: the provider's webhook URL must be updated. Raises InvalidInput for a provider without
    event webhooks."""
    from ..models import ProviderConfig
    from ..provider_events import EVENT_PROVIDERS, events_credentials_new

    if config.channel != "email" or config.provider not in EVENT_PROVIDERS:
        raise InvalidInput(
            f"Event webhooks exist for the email providers {', '.join(EVENT_PROVIDERS)}.", field="channel"
        )
    with transaction.atomic():
        locked = ProviderConfig.objects.select_for_update().get(id=config.id)
        token, secret = events_credentials_new()
        locked.events_token = locked.events_token or token
        locked.events_secret = secret
        locked.save(update_fields=["events_token", "events_secret", "updated_at"])
        audit_record(
            action="provider.events_secret_rotated",
            target_type="provider",
            target_id=locked.id,
            product_id=locked.product_id,
            organization_id=locked.organization_id,
            actor=actor,
            data={"channel": locked.channel, "provider": locked.provider},
        )
    locked.events_secret_new = secret
    return locked


def provider_config_delete(*, product, channel: str, actor: str, organization=None) -> bool:
    from ..models import ProviderConfig

    with transaction.atomic():
        config = ProviderConfig.objects.filter(product=product, organization=organization, channel=channel).first()
        if config is None:
            return False
        config.delete()
        audit_record(
            action="provider.removed",
            target_type="provider",
            target_id=config.id,
            product_id=product.id,
            organization_id=organization.id if organization else None,
            actor=actor,
            data={"channel": channel, "provider": config.provider},
        )
    return True
