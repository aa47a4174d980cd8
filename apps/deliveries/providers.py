"""Providers: who carries a message on the email, sms, push and chat channels, per product (or organization).

A provider builds one HTTP request per delivery from the rendered payload, its credentials and options,
and reads the provider's answer: accepted, refused for good (bad credentials, a rejected message), or
worth retrying (429, 5xx). Requests go out through `outbound`, like webhooks: concurrently, with the
same destination checks and timeouts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from urllib.parse import urlencode

from django.conf import settings
from rest_framework import serializers

from apps.core import destinations
from apps.core import fields as strict
from apps.core.encryption import unseal

from . import outbound
from .channels.base import DeliveryError, SendResult

E164 = re.compile(r"^\+[1-9]\d{6,14}$")


class SafeUrlField(serializers.URLField):
    """A URL Rowbell may send to: checked like webhook endpoints (and again at connect time)."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        try:
            outbound.url_check(value)
        except outbound.DestinationRefused as exc:
            raise serializers.ValidationError(exc.message) from exc
        return value


class Provider:
    """One provider of one channel. `Credentials` are its secrets, `Options` the rest."""

    channel: str
    name: str
    title: str
    ok_statuses: tuple[int, ...] = (200, 201, 202)

    class Credentials(serializers.Serializer):
        pass

    class Options(serializers.Serializer):
        pass

    def request(self, payload: dict, credentials: dict, options: dict) -> outbound.Post:
        raise NotImplementedError

    def requests(self, payload: dict, credentials: dict, options: dict) -> list[outbound.Post]:
        """One request per device for a push to several (`tokens`), else the one request."""
        if payload.get("tokens"):
            return [self.request({**payload, "to": token}, credentials, options) for token in payload["tokens"]]
        return [self.request(payload, credentials, options)]

    def refusal(self, answer: outbound.HttpAnswer) -> str:
        """The provider's own words for a refusal, when its answer carries them."""
        return answer.excerpt[:300]

    def outcome(self, answer: outbound.HttpAnswer) -> SendResult | DeliveryError:
        if answer.status in self.ok_statuses:
            return SendResult(status="sent", status_code=answer.status, excerpt=answer.excerpt,
                              duration_ms=answer.duration_ms)
        return refusal_error(self.title, answer.status, self.refusal(answer), excerpt=answer.excerpt,
                             duration_ms=answer.duration_ms,
                             retry_after=outbound.retry_after_seconds(answer.header("retry-after")))


def refusal_error(title: str, status: int | None, detail: str, **answer) -> DeliveryError:
    """What a provider's refusal means, for every channel: 401/403, the credentials (for good); 429, 5xx or
    no status at all, worth retrying; any other answer, the message was rejected (for good)."""
    if status in (401, 403):
        return DeliveryError(f"{title} refused the credentials (HTTP {status}): {detail}. Check the provider "
                             "configuration.", permanent=True, status_code=status, **answer)
    if status is None or status == 429 or status >= 500:
        return DeliveryError(f"{title} answered{f' HTTP {status}' if status else ''}: {detail}", status_code=status,
                             **answer)
    answer.pop("retry_after", None)
    return DeliveryError(f"{title} rejected the message (HTTP {status}): {detail}", permanent=True,
                         status_code=status, **answer)


def _json_post(url: str, document: dict, headers: dict | None = None) -> outbound.Post:
    return outbound.Post(url, json.dumps(document, separators=(",", ":")).encode(),
                         {"Content-Type": "application/json", **(headers or {})})


# --- SMS ---------------------------------------------------------------------------------------------


class Twilio(Provider):
    """Twilio Programmable Messaging: POST /2010-04-01/Accounts/{AccountSid}/Messages.json, form-encoded
    To, From (or MessagingServiceSid) and Body, with HTTP basic auth (Account SID, Auth Token)."""

    channel, name, title = "sms", "twilio", "Twilio"
    ok_statuses = (200, 201)

    class Credentials(serializers.Serializer):
        account_sid = strict.RegexField(r"^AC[0-9a-f]{32}$", error_messages={
            "invalid": "An Account SID: AC followed by 32 hexadecimal digits."})
        auth_token = strict.RegexField(r"^[0-9a-f]{32}$", error_messages={
            "invalid": "An Auth Token: 32 hexadecimal digits."})

    class Options(serializers.Serializer):
        sender = strict.RegexField(E164, required=False, error_messages={
            "invalid": "An E.164 number, e.g. +14155550123."}, help_text="The From number.")
        messaging_service_sid = strict.RegexField(r"^MG[0-9a-f]{32}$", required=False, error_messages={
            "invalid": "A Messaging Service SID: MG followed by 32 hexadecimal digits."})

        def validate(self, attrs):
            if not attrs.get("sender") and not attrs.get("messaging_service_sid"):
                raise serializers.ValidationError({"sender": ["A From number or a messaging_service_sid is required."]})
            return attrs

    def request(self, payload, credentials, options):
        sid = credentials["account_sid"]
        form = {"To": payload["to"], "Body": payload["text"]}
        if options.get("messaging_service_sid"):
            form["MessagingServiceSid"] = options["messaging_service_sid"]
        else:
            form["From"] = options["sender"]
        token = base64.b64encode(f"{sid}:{credentials['auth_token']}".encode()).decode()
        return outbound.Post(f"{settings.ROWBELL_TWILIO_API_URL}/2010-04-01/Accounts/{sid}/Messages.json",
                             urlencode(form).encode(),
                             {"Content-Type": "application/x-www-form-urlencoded", "Authorization": f"Basic {token}",
                              "Accept": "application/json"})

    def refusal(self, answer):
        try:  # {"code": 21211, "message": "...", "more_info": "https://www.twilio.com/docs/errors/21211"}
            error = json.loads(answer.excerpt)
            return f"error {error['code']}: {error['message']}"
        except (ValueError, KeyError, TypeError):
            return super().refusal(answer)


class HttpSms(Provider):
    """Any SMS gateway with an HTTP API: a POST to `url` whose fields are templates over the message's
    fields (`to` and `text`; for push `to`, `title` and `body`), e.g. {"msisdn": "{{ to }}", "message":
    "{{ text }}"}, sent as JSON or as a form; secret headers (e.g. Authorization) are credentials. Any
    2xx is success."""

    channel, name, title = "sms", "http", "The SMS gateway"
    ok_statuses = tuple(range(200, 300))

    class Credentials(serializers.Serializer):
        headers = serializers.DictField(child=strict.CharField(max_length=4000), required=False, default=dict,
                                        help_text="Secret request headers, e.g. Authorization.")

    class Options(serializers.Serializer):
        url = SafeUrlField(max_length=2000)
        encoding = strict.ChoiceField(choices=["json", "form"], default="json")
        fields = serializers.DictField(child=strict.CharField(max_length=2000), allow_empty=False, help_text=(
            "Request fields, each a template over `to` and `text`."))

        def validate_fields(self, value):
            from apps.core.templating import template_check

            problems = {name: problem for name, problem in
                        ((name, template_check(source)) for name, source in value.items()) if problem}
            if problems:
                raise serializers.ValidationError([f"{name}: {problem}" for name, problem in problems.items()])
            return value

    def request(self, payload, credentials, options):
        from apps.core.templating import TemplateRenderError, render

        values = {k: v for k, v in payload.items() if isinstance(v, str)}
        try:
            fields = {name: render(source, values) for name, source in options["fields"].items()}
        except TemplateRenderError as exc:
            raise DeliveryError(f"{self.title}'s request template: {exc}", permanent=True) from exc
        headers = dict(credentials.get("headers") or {})
        if options.get("encoding") == "form":
            return outbound.Post(options["url"], urlencode(fields).encode(),
                                 {"Content-Type": "application/x-www-form-urlencoded", **headers})
        return _json_post(options["url"], fields, headers)


# --- Chat --------------------------------------------------------------------------------------------


class _ChatWebhook(serializers.Serializer):
    webhook_url = SafeUrlField(max_length=2000, help_text="The incoming webhook's URL (a secret).")


def _chat_url(payload: dict, credentials: dict) -> str:
    """Where a chat message goes: the recipient's own webhook (sealed in the payload), else the configured one."""
    return unseal(payload["webhook_url"]) if payload.get("webhook_url") else credentials["webhook_url"]


class Slack(Provider):
    """Slack incoming webhooks: a JSON POST of {"text": ...}; Slack answers 200 "ok", or an error code
    in the body (400 invalid_payload, 403 action_prohibited, 404 channel_not_found, 410
    channel_is_archived, 429 with Retry-After, 500 rollup_error)."""

    channel, name, title = "chat", "slack", "Slack"
    ok_statuses = (200,)
    Credentials = _ChatWebhook

    def request(self, payload, credentials, options):
        text = f"*{payload['title']}*\n{payload['text']}" if payload.get("title") else payload["text"]
        return _json_post(_chat_url(payload, credentials), {"text": text})


class Teams(Provider):
    """Microsoft Teams incoming webhooks (Workflows): a JSON POST of a message with one Adaptive Card;
    Teams answers 200 or 202. A legacy connector may answer 200 with a failure in the body, which is
    read as such."""

    channel, name, title = "chat", "teams", "Microsoft Teams"
    ok_statuses = (200, 202)
    Credentials = _ChatWebhook

    def request(self, payload, credentials, options):
        body = []
        if payload.get("title"):
            body.append({"type": "TextBlock", "text": payload["title"], "weight": "Bolder", "size": "Medium",
                         "wrap": True})
        body.append({"type": "TextBlock", "text": payload["text"], "wrap": True})
        card = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
                "version": "1.4", "body": body}
        return _json_post(_chat_url(payload, credentials), {"type": "message", "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}]})

    def outcome(self, answer):
        failed = answer.excerpt.startswith("Webhook message delivery failed")
        if answer.status == 200 and failed:
            found = re.search(r"HTTP error (\d{3})", answer.excerpt)
            code = int(found.group(1)) if found else 500
            return super().outcome(outbound.HttpAnswer(code, answer.headers, answer.excerpt, answer.duration_ms,
                                                        shown=answer.shown))
        return super().outcome(answer)


# --- Push --------------------------------------------------------------------------------------------


class HttpPush(HttpSms):
    channel, name, title = "push", "http", "The push gateway"


class _ServiceAccount(serializers.Serializer):
    type = strict.ChoiceField(choices=["service_account"])
    project_id = strict.RegexField(r"^[a-z][a-z0-9-]{4,61}[a-z0-9]$", error_messages={
        "invalid": "A Google Cloud project id."})
    private_key_id = strict.CharField(max_length=100)
    private_key = strict.CharField(max_length=10_000, trim_whitespace=False)
    client_email = strict.EmailField()
    token_uri = SafeUrlField(default="https://oauth2.googleapis.com/token")

    def validate_private_key(self, value):
        from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        try:
            key = load_pem_private_key(value.encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise serializers.ValidationError("Not a PEM private key.") from exc
        if not isinstance(key, RSAPrivateKey):
            raise serializers.ValidationError("Must be an RSA key.")
        return value

    def to_internal_value(self, data):
        # A downloaded service-account file has more fields (client_id, auth_uri...): they are not needed.
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k in self.fields}
        return super().to_internal_value(data)


_tokens: dict[str, tuple[str, float]] = {}


class Fcm(Provider):
    """Firebase Cloud Messaging HTTP v1: POST /v1/projects/{project_id}/messages:send with an OAuth 2.0
    access token, obtained from the service account's own token endpoint with a signed JWT
    (RS256, scope firebase.messaging) and kept until shortly before it expires."""

    channel, name, title = "push", "fcm", "Firebase Cloud Messaging"
    ok_statuses = (200,)
    SCOPE = "https://www.googleapis.com/auth/firebase.messaging"

    class Credentials(serializers.Serializer):
        service_account = _ServiceAccount()

    def _access_token(self, account: dict) -> str:
        import time

        # Cached per whole account (key and token endpoint included): two configurations that only share
        # an email and key id never share a token.
        key = hashlib.sha256(json.dumps(account, sort_keys=True).encode()).hexdigest()
        cached = _tokens.get(key)
        if cached and cached[1] > time.time() + 300:
            return cached[0]
        now = int(time.time())
        assertion = _jwt_rs256({"alg": "RS256", "typ": "JWT", "kid": account["private_key_id"]},
                               {"iss": account["client_email"], "scope": self.SCOPE, "aud": account["token_uri"],
                                "iat": now, "exp": now + 3600}, account["private_key"])
        try:
            answer = outbound.post(account["token_uri"], urlencode({
                "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}).encode(),
                {"Content-Type": "application/x-www-form-urlencoded"})
        except outbound.OutboundError as exc:
            raise DeliveryError(f"Cannot get an access token: {exc.message}", permanent=exc.permanent) from exc
        if answer.status != 200:
            # 400 invalid_grant / 401 invalid_client: the service account is wrong or revoked.
            raise DeliveryError(f"Google refused the service account (HTTP {answer.status}): {answer.excerpt[:300]}",
                                permanent=answer.status in (400, 401, 403), status_code=answer.status)
        try:
            grant = json.loads(answer.body)
            token, lifetime = str(grant["access_token"]), int(grant.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError) as exc:
            raise DeliveryError(f"Google's token endpoint answered without an access token: {answer.excerpt[:200]}",
                                status_code=answer.status) from exc
        _tokens[key] = (token, time.time() + min(lifetime, 3600))
        return token

    def request(self, payload, credentials, options):
        account = credentials["service_account"]
        message = {"token": payload["to"], "notification": {"title": payload["title"], "body": payload["body"]}}
        return _json_post(f"{settings.ROWBELL_FCM_API_URL}/v1/projects/{account['project_id']}/messages:send",
                          {"message": message}, {"Authorization": f"Bearer {self._access_token(account)}"})

    def refusal(self, answer):
        try:  # {"error": {"code": 404, "message": "...", "status": "NOT_FOUND", "details": [{"errorCode": "UNREGISTERED"}]}}
            error = json.loads(answer.excerpt)["error"]
            codes = [d.get("errorCode") for d in error.get("details", []) if d.get("errorCode")]
            return f"{codes[0] if codes else error.get('status')}: {error.get('message')}"
        except (ValueError, KeyError, TypeError, AttributeError):
            return super().refusal(answer)


def _jwt_rs256(header: dict, claims: dict, private_key_pem: str) -> str:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps(header, separators=(',', ':')).encode())}." \
                    f"{b64(json.dumps(claims, separators=(',', ':')).encode())}"
    key = load_pem_private_key(private_key_pem.encode(), password=None)
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64(signature)}"


# --- Email ---------------------------------------------------------------------------------------------


class EmailProvider(Provider):
    """An email provider is a Django email backend (anymail's for the ESPs), opened once per batch."""

    channel = "email"

    def connection(self, credentials: dict, options: dict):
        raise NotImplementedError


class _EmailOptions(serializers.Serializer):
    from_email = strict.EmailField(required=False, help_text="Sender address (default: DEFAULT_FROM_EMAIL).")


class Smtp(EmailProvider):
    """Any SMTP server. Its host is checked like every destination, on the address actually connected to."""

    name, title = "smtp", "The SMTP server"

    class Credentials(serializers.Serializer):
        username = strict.CharField(max_length=500, required=False, allow_blank=True, default="")
        password = strict.CharField(max_length=500, required=False, allow_blank=True, default="")

    class Options(_EmailOptions):
        host = strict.RegexField(r"^[A-Za-z0-9.-]+$|^\[?[0-9A-Fa-f:.]+\]?$", max_length=255, error_messages={
            "invalid": "A host name or an IP address."})
        port = strict.IntegerField(min_value=1, max_value=65535, default=587)
        security = strict.ChoiceField(choices=["starttls", "tls", "none"], default="starttls")

        def validate_host(self, value):
            try:
                destinations.host_check(value, policy=destinations.OUTBOUND)
            except destinations.DestinationRefused as exc:
                raise serializers.ValidationError(exc.message) from exc
            return value

    def connection(self, credentials, options):
        from .smtp import GuardedSmtpBackend

        return GuardedSmtpBackend(host=options["host"], port=options["port"], username=credentials.get("username"),
                                  password=credentials.get("password"), use_tls=options["security"] == "starttls",
                                  use_ssl=options["security"] == "tls", timeout=settings.ROWBELL_HTTP_TIMEOUT,
                                  fail_silently=False)


class SendGrid(EmailProvider):
    """SendGrid's v3 Mail Send API through anymail: POST /v3/mail/send with a bearer API key."""

    name, title = "sendgrid", "SendGrid"

    class Credentials(serializers.Serializer):
        api_key = strict.RegexField(r"^SG\.[\w-]{16,}\.[\w-]{16,}$", error_messages={
            "invalid": "A SendGrid API key: SG.<id>.<secret>."})

    Options = _EmailOptions

    def connection(self, credentials, options):
        import warnings

        from anymail.backends.sendgrid import EmailBackend
        from anymail.exceptions import AnymailNotSupportedWarning

        # anymail no longer tests against SendGrid (anymail issue 432); its v3 Mail Send support remains,
        # and the test suite checks the request against SendGrid's documented form.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AnymailNotSupportedWarning)
            return EmailBackend(api_key=credentials["api_key"], api_url=settings.ROWBELL_SENDGRID_API_URL,
                                fail_silently=False, timeout=settings.ROWBELL_HTTP_TIMEOUT)


class Mailgun(EmailProvider):
    """Mailgun's Messages API through anymail: POST /v3/{domain}/messages, basic auth api:{key}."""

    name, title = "mailgun", "Mailgun"

    class Credentials(serializers.Serializer):
        api_key = strict.CharField(min_length=20, max_length=200)
        webhook_signing_key = strict.CharField(min_length=20, max_length=200, required=False, help_text=(
            "Mailgun's HTTP webhook signing key: its event webhook accepts only calls signed with it."))

    class Options(_EmailOptions):
        sender_domain = strict.CharField(max_length=255, required=False, help_text=(
            "The Mailgun sending domain (default: the sender address's domain)."))
        region = strict.ChoiceField(choices=["us", "eu"], default="us")

    def connection(self, credentials, options):
        from anymail.backends.mailgun import EmailBackend

        url = settings.ROWBELL_MAILGUN_API_URL or (
            "https://api.eu.mailgun.net/v3" if options.get("region") == "eu" else "https://api.mailgun.net/v3")
        extra = {"sender_domain": options["sender_domain"]} if options.get("sender_domain") else {}
        return EmailBackend(api_key=credentials["api_key"], api_url=url, fail_silently=False,
                            timeout=settings.ROWBELL_HTTP_TIMEOUT, **extra)


class Postmark(EmailProvider):
    """Postmark's Email API through anymail: POST /email with the X-Postmark-Server-Token header."""

    name, title = "postmark", "Postmark"

    class Credentials(serializers.Serializer):
        server_token = strict.RegexField(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
                                              error_messages={"invalid": "A Postmark server token (a UUID)."})

    Options = _EmailOptions

    def connection(self, credentials, options):
        from anymail.backends.postmark import EmailBackend

        return EmailBackend(server_token=credentials["server_token"], api_url=settings.ROWBELL_POSTMARK_API_URL,
                            fail_silently=False, timeout=settings.ROWBELL_HTTP_TIMEOUT)


class AmazonSes(EmailProvider):
    """Amazon SES (API v2) through anymail and boto3: SendEmail, signed with the access key (SigV4)."""

    name, title = "ses", "Amazon SES"

    class Credentials(serializers.Serializer):
        access_key_id = strict.RegexField(r"^(AKIA|ASIA)[A-Z0-9]{16}$", error_messages={
            "invalid": "An AWS access key id: AKIA followed by 16 capital letters or digits."})
        secret_access_key = strict.CharField(min_length=40, max_length=40)

    class Options(_EmailOptions):
        region = strict.RegexField(r"^[a-z]{2}(-[a-z]+)+-\d$", error_messages={
            "invalid": "An AWS region, e.g. eu-west-1."})
        events_topic_arn = strict.RegexField(
            r"^arn:aws[a-z-]*:sns:[a-z]{2}(-[a-z]+)+-\d:\d{12}:[A-Za-z0-9_-]{1,256}$", required=False,
            error_messages={"invalid": "An SNS topic ARN, e.g. arn:aws:sns:eu-west-1:123456789012:ses-events."},
            help_text="The SNS topic SES publishes this configuration's events to: its event webhook accepts no other.")

    def connection(self, credentials, options):
        from anymail.backends.amazon_ses import EmailBackend
        from botocore.config import Config

        client = {"region_name": options["region"], "aws_access_key_id": credentials["access_key_id"],
                  "aws_secret_access_key": credentials["secret_access_key"],
                  # One try per attempt: Rowbell's own retries are the ones recorded.
                  "config": Config(retries={"max_attempts": 1, "mode": "standard"},
                                   connect_timeout=settings.ROWBELL_HTTP_CONNECT_TIMEOUT,
                                   read_timeout=settings.ROWBELL_HTTP_TIMEOUT)}
        if settings.ROWBELL_SES_ENDPOINT_URL:
            client["endpoint_url"] = settings.ROWBELL_SES_ENDPOINT_URL
        return EmailBackend(client_params=client, fail_silently=False)


# --- Registry ----------------------------------------------------------------------------------------

PROVIDERS: dict[tuple[str, str], Provider] = {
    (p.channel, p.name): p for p in (Twilio(), HttpSms(), Slack(), Teams(), Fcm(), HttpPush(), Smtp(), SendGrid(),
                                     Mailgun(), Postmark(), AmazonSes())}


def providers_of(channel: str) -> list[str]:
    return sorted(name for kind, name in PROVIDERS if kind == channel)


@dataclass
class Configured:
    provider: Provider
    credentials: dict
    options: dict


def provider_for(delivery, memo: dict) -> Configured | None:
    """The provider configured for a delivery's channel: its organization's, else its product's."""
    from .models import ProviderConfig

    key = (delivery.product_id, delivery.organization_id, delivery.channel)
    if key not in memo:
        configs = {c.organization_id: c for c in ProviderConfig.objects.filter(
            product_id=delivery.product_id, channel=delivery.channel,
            organization_id__in=[i for i in (delivery.organization_id,) if i]) |
            ProviderConfig.objects.filter(product_id=delivery.product_id, channel=delivery.channel,
                                          organization__isnull=True)}
        config = configs.get(delivery.organization_id) or configs.get(None)
        memo[key] = config and Configured(PROVIDERS[(config.channel, config.provider)],
                                          json.loads(config.credentials), config.options)
    return memo[key]
