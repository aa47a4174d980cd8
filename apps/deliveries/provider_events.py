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
from urllib.parse import urlsplit, urlunsplit

from anymail.exceptions import AnymailAPIError, AnymailWebhookValidationFailure
from anymail.webhooks.amazon_ses import AmazonSESTrackingWebhookView
from anymail.webhooks.base import AnymailBasicAuthMixin
from anymail.webhooks.mailgun import MailgunTrackingWebhookView
from anymail.webhooks.postmark import PostmarkTrackingWebhookView
from anymail.webhooks.sendgrid import SendGridTrackingWebhookView
from django.conf import settings
from django.http import HttpResponseForbidden, HttpResponseNotFound
from django.views.decorators.csrf import csrf_exempt

from .models import ProviderConfig
from .sns import SnsSignatureInvalid, sns_signature_verify
from .tracking import provider_event

USERNAME = "rowbell"

# Email providers whose events Rowbell reads (Rowbell's provider names, as in PUT /api/v1/providers/email).
EVENT_PROVIDERS = ("mailgun", "postmark", "sendgrid", "ses")


class VerifiedAmazonSesTrackingView(AmazonSESTrackingWebhookView):
    """anymail's SES tracking view with the SNS signature checked on every message (anymail 15 does not
    check it) and, when `topic_arns` is given, the message's TopicArn among them.

    A call is checked in this order, each step only once the one before it held:

    1. HTTP basic auth (anymail's own check). anymail runs every `validate_request` of the class chain in
       MRO order, which would put this subclass's SNS checks, and their certificate download, before it:
       `run_validators` puts it first. A view without a basic-auth secret refuses every call.
    2. The body: a JSON object whose fields read below are strings (apps.deliveries.sns.message_check).
    3. The SNS signature (apps.deliveries.sns.sns_signature_verify: the one step that may fetch a
       certificate), then the TopicArn.
    4. anymail's remaining checks (the x-amz-sns-* headers equal the body's).

    Whatever is malformed answers 400 (AnymailWebhookValidationFailure is a SuspiciousOperation), never
    500: anymail's AnymailAPIError for a body that is not JSON, or a Message that is not, is mapped to it.
    """

    topic_arns: list[str] | None = None

    def run_validators(self, request):
        if not self.basic_auth:
            raise AnymailWebhookValidationFailure("No basic-auth secret is configured for this webhook.")
        first = AnymailBasicAuthMixin.validate_request
        first(self, request)
        for validator in self.validators:
            if validator is not first:
                validator(self, request)

    def validate_request(self, request):
        try:
            message = self._parse_sns_message(request)
            sns_signature_verify(message)  # checks the message's shape first
        except AnymailAPIError as exc:
            raise AnymailWebhookValidationFailure("The body is not an SNS JSON message.") from exc
        except SnsSignatureInvalid as exc:
            raise AnymailWebhookValidationFailure(f"Amazon SNS message refused: {exc}") from exc
        if self.topic_arns is not None and message["TopicArn"] not in self.topic_arns:
            raise AnymailWebhookValidationFailure("The SNS topic is not the one configured for these events.")

    def post(self, request, *args, **kwargs):
        try:
            return super().post(request, *args, **kwargs)
        except AnymailAPIError as exc:  # a signed message whose content anymail cannot read
            raise AnymailWebhookValidationFailure(f"Unreadable SNS message: {exc}") from exc


def verified_ses_view() -> type[VerifiedAmazonSesTrackingView]:
    """The SES tracking view class (for the service-wide route and the per-configuration one)."""
    return VerifiedAmazonSesTrackingView


_VIEWS = {
    "sendgrid": SendGridTrackingWebhookView,
    "mailgun": MailgunTrackingWebhookView,
    "postmark": PostmarkTrackingWebhookView,
    "ses": VerifiedAmazonSesTrackingView,
}


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
    return urlunsplit(
        (
            base.scheme,
            netloc,
            f"{base.path}/webhooks/providers/{config.provider}/{config.events_token}/tracking/",
            "",
            "",
        )
    )


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
        kwargs.update(
            topic_arns=[topic],
            client_params={
                "aws_access_key_id": credentials.get("access_key_id"),
                "aws_secret_access_key": credentials.get("secret_access_key"),
            },
        )
    view = _VIEWS[provider](**kwargs)
    view.setup(request, provider=provider, token=token)
    return view.dispatch(request)
