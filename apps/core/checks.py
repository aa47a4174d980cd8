"""System checks for configuration that Rowbell cannot run without."""

from cryptography.fernet import Fernet
from django.conf import settings
from django.core import checks
from django.core.checks import Error, register

from .ratelimits import Rate


@register()
def encryption_keys_check(app_configs, **kwargs):
    keys = settings.ROWBELL_ENCRYPTION_KEYS
    if not keys:
        return [
            Error(
                "ROWBELL_ENCRYPTION_KEYS is not set.",
                hint="Generate one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'",
                id="rowbell.E001",
            )
        ]
    errors = []
    for index, key in enumerate(keys):
        try:
            Fernet(key.encode())
        except (ValueError, TypeError):
            errors.append(Error(f"ROWBELL_ENCRYPTION_KEYS[{index}] is not a valid Fernet key.", id="rowbell.E002"))
    return errors


@register()
def secret_key_check(app_configs, **kwargs):
    if not settings.SECRET_KEY:
        return [Error("DJANGO_SECRET_KEY is not set.", id="rowbell.E003")]
    return []


@register()
def shared_provider_webhook_check(app_configs, **kwargs):
    """Warning rowbell.W001 (a list of one checks.Warning, else an empty list) while the service-wide
    provider event webhooks are enabled, i.e. settings.ANYMAIL["WEBHOOK_SECRET"] is set (from
    ROWBELL_PROVIDER_WEBHOOK_SECRET, config/settings/base.py). Those routes (apps/deliveries/tracking_urls.py)
    take one basic-auth secret for every product: whoever holds it (any product's provider account) can
    report events for every product's messages. Each provider configuration's own webhook
    (apps.deliveries.provider_events) is scoped to its product."""
    if (getattr(settings, "ANYMAIL", {}) or {}).get("WEBHOOK_SECRET"):
        return [
            checks.Warning(
                "ROWBELL_PROVIDER_WEBHOOK_SECRET is set: the service-wide provider event webhooks accept events "
                "for every product with one secret.",
                hint="Point each provider at its configuration's own events_webhook URL (GET /api/v1/providers), "
                "then unset ROWBELL_PROVIDER_WEBHOOK_SECRET and ROWBELL_MAILGUN_WEBHOOK_SIGNING_KEY.",
                id="rowbell.W001",
            )
        ]
    return []


@register()
def rate_limits_check(app_configs, **kwargs):
    """Each API rate-limit setting parses (apps/core/ratelimits.py), so that a typo fails at start-up rather
    than answering 500 to every call."""
    errors = []
    for name in (
        "ROWBELL_API_RATE",
        "ROWBELL_TRIGGER_RATE",
        "ROWBELL_AUTH_FAILURES_PER_IP",
        "ROWBELL_AUTH_FAILURES_PER_PREFIX",
    ):
        try:
            Rate.parse(getattr(settings, name))
        except ValueError as exc:
            errors.append(Error(f"{name}: {exc}", id="rowbell.E004"))
    return errors
