"""Providers' event webhooks (delivered, bounced, opened...), one per email provider configuration.

Each configuration of an event-reporting provider (SendGrid, Mailgun, Postmark, Amazon SES) has its own
URL, `/webhooks/providers/<provider>/<token>/tracking/`, whose token is unguessable, and its own HTTP
basic-auth secret (user `rowbell`). A call is accepted only with both, plus what the provider itself
signs: Mailgun's webhook signing key from the configuration's credentials, and for SES the SNS message
signature and a TopicArn equal to the configuration's `events_topic_arn`. What a call reports can only
touch the deliveries of that configuration's product (or organization): one product's provider account,
or its webhook secret, can never mark another product's message.

anymail's views do the parsing and checking; they are built per call with the configuration's secrets
(https://anymail.dev/en/stable/tips/securing_webhooks/).
"""

from __future__ import annotations

import json
import secrets
from functools import lru_cache
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.http import HttpResponseForbidden, HttpResponseNotFound
from django.views.decorators.csrf import csrf_exempt

from .tracking import provider_event

USERNAME = "rowbell"


@lru_cache(maxsize=1)
def _views() -> dict:
    from anymail.webhooks.mailgun import MailgunTrackingWebhookView
    from anymail.webhooks.postmark import PostmarkTrackingWebhookView
    from anymail.webhooks.sendgrid import SendGridTrackingWebhookView

    return {"sendgrid": SendGridTrackingWebhookView, "mailgun": MailgunTrackingWebhookView,
            "postmark": PostmarkTrackingWebhookView, "ses": verified_ses_view()}


# Email providers whose events Rowbell reads (Rowbell's provider names, as in PUT /api/v1/providers/email).
EVENT_PROVIDERS = ("mailgun", "postmark", "sendgrid", "ses")


@lru_cache(maxsize=1)
def verified_ses_view():
    """anymail's SES tracking view with the SNS signature checked on every message (anymail 15 does not
    check it) and, when `topic_arns` is given, the message's TopicArn among them."""
    from anymail.exceptions import AnymailWebhookValidationFailure
    from anymail.webhooks.amazon_ses import AmazonSESTrackingWebhookView

    from .sns import SnsSignatureInvalid, sns_signature_verify

    class VerifiedAmazonSesTrackingView(AmazonSESTrackingWebhookView):
        topic_arns: list[str] | None = None

        def validate_request(self, request):
            # anymail calls every validate_request of the class chain: basic auth and SNS headers as well.
            message = self._parse_sns_message(request)
            try:
                sns_signature_verify(message)
            except SnsSignatureInvalid as exc:
                raise AnymailWebhookValidationFailure(f"Amazon SNS signature refused: {exc}") from exc
            if self.topic_arns is not None and message.get("TopicArn") not in self.topic_arns:
                raise AnymailWebhookValidationFailure("The SNS topic is not the one configured for these events.")

    return VerifiedAmazonSesTrackingView


def events_credentials_new() -> tuple[str, str]:
    """A new (token, secret) pair for a configuration's event webhook: the URL's token and the basic-auth
    password, both 256-bit random."""
    return secrets.token_urlsafe(32), secrets.token_urlsafe(32)


def provider_events_url(config, *, secret: str = "") -> str:
    """The event webhook URL of a provider configuration, on ROWBELL_PUBLIC_URL; with `secret`, the
    basic-auth credentials written into it (`https://rowbell:<secret>@host/...`), as providers take them.
    Empty when the configuration has no event webhook."""
    if config.provider not in EVENT_PROVIDERS or not config.events_token:
        return ""
    base = urlsplit(settings.ROWBELL_PUBLIC_URL.rstrip("/"))
    netloc = f"{USERNAME}:{secret}@{base.netloc}" if secret else base.netloc
    return urlunsplit((base.scheme, netloc, f"{base.path}/webhooks/providers/{config.provider}/"
                                            f"{config.events_token}/tracking/", "", ""))


class _ScopedTracking:
    """Stands in for anymail's `tracking` signal on a configuration's view (anymail's view calls
    `self.signal.send(...)` for each event): events go straight to the configuration's own deliveries."""

    def __init__(self, config):
        self.product_id, self.organization_id = config.product_id, config.organization_id

    def send(self, sender, event, esp_name):
        provider_event(sender, event, esp_name, product_id=self.product_id, organization_id=self.organization_id)


def _refused(reason: str):
    return HttpResponseForbidden(reason, content_type="text/plain")


@csrf_exempt
def provider_events(request, provider: str, token: str):
    """One configuration's provider event webhook. 404 for an unknown token (or one of another provider),
    403 while the configuration lacks what its provider's calls are checked with; otherwise anymail's
    answer: 400 for a wrong secret or signature, 200 once the events are recorded."""
    from .models import ProviderConfig

    config = None
    if provider in EVENT_PROVIDERS and token:
        config = ProviderConfig.objects.filter(channel="email", provider=provider, events_token=token).first()
    if config is None or not config.events_secret:
        return HttpResponseNotFound("No provider event webhook here.", content_type="text/plain")
    kwargs = {"webhook_secret": [f"{USERNAME}:{config.events_secret}"], "signal": _ScopedTracking(config)}
    if provider == "mailgun":
        signing_key = json.loads(config.credentials).get("webhook_signing_key")
        if not signing_key:
            return _refused("Set credentials.webhook_signing_key (Mailgun's HTTP webhook signing key) first.")
        kwargs["webhook_signing_key"] = signing_key
    if provider == "ses":
        topic = (config.options or {}).get("events_topic_arn")
        if not topic:
            return _refused("Set options.events_topic_arn (the SNS topic of the SES events) first.")
        credentials = json.loads(config.credentials)
        # Confirming the SNS subscription (as anymail does) is signed with the configuration's own keys.
        kwargs.update(topic_arns=[topic], client_params={
            "aws_access_key_id": credentials.get("access_key_id"),
            "aws_secret_access_key": credentials.get("secret_access_key")})
    view = _views()[provider](**kwargs)
    view.setup(request, provider=provider, token=token)
    return view.dispatch(request)
