"""Email providers: SMTP, and the ESPs through anymail (SendGrid, Mailgun, Postmark, Amazon SES)."""

from __future__ import annotations

from django.conf import settings
from rest_framework import serializers

from apps.core import destinations
from apps.core import fields as strict

from ..providers import Provider, provider_register


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
        host = strict.RegexField(
            r"^[A-Za-z0-9.-]+$|^\[?[0-9A-Fa-f:.]+\]?$",
            max_length=255,
            error_messages={"invalid": "A host name or an IP address."},
        )
        port = strict.IntegerField(min_value=1, max_value=65535, default=587)
        security = strict.ChoiceField(choices=["starttls", "tls", "none"], default="starttls")

        def validate_host(self, value):
            try:
                destinations.host_check(value, policy=destinations.OUTBOUND)
            except destinations.DestinationRefused as exc:
                raise serializers.ValidationError(exc.message) from exc
            return value

    def connection(self, credentials, options):
        from apps.deliveries.smtp import GuardedSmtpBackend

        return GuardedSmtpBackend(
            host=options["host"],
            port=options["port"],
            username=credentials.get("username"),
            password=credentials.get("password"),
            use_tls=options["security"] == "starttls",
            use_ssl=options["security"] == "tls",
            timeout=settings.ROWBELL_HTTP_TIMEOUT,
            fail_silently=False,
        )


class SendGrid(EmailProvider):
    """SendGrid's v3 Mail Send API through anymail: POST /v3/mail/send with a bearer API key."""

    name, title = "sendgrid", "SendGrid"

    class Credentials(serializers.Serializer):
        api_key = strict.RegexField(
            r"^SG\.[\w-]{16,}\.[\w-]{16,}$", error_messages={"invalid": "A SendGrid API key: SG.<id>.<secret>."}
        )

    Options = _EmailOptions

    def connection(self, credentials, options):
        import warnings

        from anymail.backends.sendgrid import EmailBackend
        from anymail.exceptions import AnymailNotSupportedWarning

        # anymail no longer tests against SendGrid (anymail issue 432); its v3 Mail Send support remains,
        # and the test suite checks the request against SendGrid's documented form.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AnymailNotSupportedWarning)
            return EmailBackend(
                api_key=credentials["api_key"],
                api_url=settings.ROWBELL_SENDGRID_API_URL,
                fail_silently=False,
                timeout=settings.ROWBELL_HTTP_TIMEOUT,
            )


class Mailgun(EmailProvider):
    """Mailgun's Messages API through anymail: POST /v3/{domain}/messages, basic auth api:{key}."""

    name, title = "mailgun", "Mailgun"

    class Credentials(serializers.Serializer):
        api_key = strict.CharField(min_length=20, max_length=200)
        webhook_signing_key = strict.CharField(
            min_length=20,
            max_length=200,
            required=False,
            help_text=("Mailgun's HTTP webhook signing key: its event webhook accepts only calls signed with it."),
        )

    class Options(_EmailOptions):
        sender_domain = strict.CharField(
            max_length=255,
            required=False,
            help_text=("The Mailgun sending domain (default: the sender address's domain)."),
        )
        region = strict.ChoiceField(choices=["us", "eu"], default="us")

    def connection(self, credentials, options):
        from anymail.backends.mailgun import EmailBackend

        url = settings.ROWBELL_MAILGUN_API_URL or (
            "https://api.eu.mailgun.net/v3" if options.get("region") == "eu" else "https://api.mailgun.net/v3"
        )
        extra = {"sender_domain": options["sender_domain"]} if options.get("sender_domain") else {}
        return EmailBackend(
            api_key=credentials["api_key"],
            api_url=url,
            fail_silently=False,
            timeout=settings.ROWBELL_HTTP_TIMEOUT,
            **extra,
        )


class Postmark(EmailProvider):
    """Postmark's Email API through anymail: POST /email with the X-Postmark-Server-Token header."""

    name, title = "postmark", "Postmark"

    class Credentials(serializers.Serializer):
        server_token = strict.RegexField(
            r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
            error_messages={"invalid": "A Postmark server token (a UUID)."},
        )

    Options = _EmailOptions

    def connection(self, credentials, options):
        from anymail.backends.postmark import EmailBackend

        return EmailBackend(
            server_token=credentials["server_token"],
            api_url=settings.ROWBELL_POSTMARK_API_URL,
            fail_silently=False,
            timeout=settings.ROWBELL_HTTP_TIMEOUT,
        )


class AmazonSes(EmailProvider):
    """Amazon SES (API v2) through anymail and boto3: SendEmail, signed with the access key (SigV4)."""

    name, title = "ses", "Amazon SES"

    class Credentials(serializers.Serializer):
        access_key_id = strict.RegexField(
            r"^(AKIA|ASIA)[A-Z0-9]{16}$",
            error_messages={"invalid": "An AWS access key id: AKIA followed by 16 capital letters or digits."},
        )
        secret_access_key = strict.CharField(min_length=40, max_length=40)

    class Options(_EmailOptions):
        region = strict.RegexField(
            r"^[a-z]{2}(-[a-z]+)+-\d$", error_messages={"invalid": "An AWS region, e.g. eu-west-1."}
        )
        events_topic_arn = strict.RegexField(
            r"^arn:aws[a-z-]*:sns:[a-z]{2}(-[a-z]+)+-\d:\d{12}:[A-Za-z0-9_-]{1,256}$",
            required=False,
            error_messages={"invalid": "An SNS topic ARN, e.g. arn:aws:sns:eu-west-1:123456789012:ses-events."},
            help_text="The SNS topic SES publishes this configuration's events to: its event webhook accepts no other.",
        )

    def connection(self, credentials, options):
        from anymail.backends.amazon_ses import EmailBackend
        from botocore.config import Config

        client = {
            "region_name": options["region"],
            "aws_access_key_id": credentials["access_key_id"],
            "aws_secret_access_key": credentials["secret_access_key"],
            # One try per attempt: Rowbell's own retries are the ones recorded.
            "config": Config(
                retries={"max_attempts": 1, "mode": "standard"},
                connect_timeout=settings.ROWBELL_HTTP_CONNECT_TIMEOUT,
                read_timeout=settings.ROWBELL_HTTP_TIMEOUT,
            ),
        }
        if settings.ROWBELL_SES_ENDPOINT_URL:
            client["endpoint_url"] = settings.ROWBELL_SES_ENDPOINT_URL
        return EmailBackend(client_params=client, fail_silently=False)


provider_register(Smtp())
provider_register(SendGrid())
provider_register(Mailgun())
provider_register(Postmark())
provider_register(AmazonSes())
