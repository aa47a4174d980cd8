"""Providers: who carries a message on the email, sms, push and chat channels, per product (or organization).

Each channel's package holds its own providers (`channels/sms/providers.py`, ...) and registers them here
with `provider_register`; this module has what they share: the base class, the refusal rules, the registry
and the lookup of a delivery's configured provider.

A provider builds one HTTP request per delivery from the rendered payload, its credentials and options,
and reads the provider's answer: accepted, refused for good (bad credentials, a rejected message), or
worth retrying (429, 5xx). Requests go out through `outbound`, like webhooks: concurrently, with the
same destination checks and timeouts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import urlencode

from rest_framework import serializers

from apps.core import fields as strict
from apps.core.templating import TemplateRenderError, render, template_check
from apps.deliveries import outbound

from .base import DeliveryError, SendResult


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
            return SendResult(
                status="sent", status_code=answer.status, excerpt=answer.excerpt, duration_ms=answer.duration_ms
            )
        return refusal_error(
            self.title,
            answer.status,
            self.refusal(answer),
            excerpt=answer.excerpt,
            duration_ms=answer.duration_ms,
            retry_after=outbound.retry_after_seconds(answer.header("retry-after")),
        )


def refusal_error(title: str, status: int | None, detail: str, **answer) -> DeliveryError:
    """What a provider's refusal means, for every channel: 401/403, the credentials (for good); 429, 5xx or
    no status at all, worth retrying; any other answer, the message was rejected (for good)."""
    if status in (401, 403):
        return DeliveryError(
            f"{title} refused the credentials (HTTP {status}): {detail}. Check the provider configuration.",
            permanent=True,
            status_code=status,
            **answer,
        )
    if status is None or status == 429 or status >= 500:
        return DeliveryError(
            f"{title} answered{f' HTTP {status}' if status else ''}: {detail}", status_code=status, **answer
        )
    answer.pop("retry_after", None)
    return DeliveryError(
        f"{title} rejected the message (HTTP {status}): {detail}", permanent=True, status_code=status, **answer
    )


def json_post(url: str, document: dict, headers: dict | None = None) -> outbound.Post:
    """A JSON POST request, compact."""
    return outbound.Post(
        url,
        json.dumps(document, separators=(",", ":")).encode(),
        {"Content-Type": "application/json", **(headers or {})},
    )


class HttpGateway(Provider):
    """Any SMS gateway with an HTTP API: a POST to `url` whose fields are templates over the message's
    fields (`to` and `text`; for push `to`, `title` and `body`), e.g. {"msisdn": "{{ to }}", "message":
    "{{ text }}"}, sent as JSON or as a form; secret headers (e.g. Authorization) are credentials. Any
    2xx is success."""

    name = "http"
    ok_statuses = tuple(range(200, 300))

    class Credentials(serializers.Serializer):
        headers = serializers.DictField(
            child=strict.CharField(max_length=4000),
            required=False,
            default=dict,
            help_text="Secret request headers, e.g. Authorization.",
        )

    class Options(serializers.Serializer):
        url = SafeUrlField(max_length=2000)
        encoding = strict.ChoiceField(choices=["json", "form"], default="json")
        fields = serializers.DictField(
            child=strict.CharField(max_length=2000),
            allow_empty=False,
            help_text=("Request fields, each a template over `to` and `text`."),
        )

        def validate_fields(self, value):
            problems = {
                name: problem
                for name, problem in ((name, template_check(source)) for name, source in value.items())
                if problem
            }
            if problems:
                raise serializers.ValidationError([f"{name}: {problem}" for name, problem in problems.items()])
            return value

    def request(self, payload, credentials, options):
        values = {k: v for k, v in payload.items() if isinstance(v, str)}
        try:
            fields = {name: render(source, values) for name, source in options["fields"].items()}
        except TemplateRenderError as exc:
            raise DeliveryError(f"{self.title}'s request template: {exc}", permanent=True) from exc
        headers = dict(credentials.get("headers") or {})
        if options.get("encoding") == "form":
            return outbound.Post(
                options["url"],
                urlencode(fields).encode(),
                {"Content-Type": "application/x-www-form-urlencoded", **headers},
            )
        return json_post(options["url"], fields, headers)


# --- Registry ----------------------------------------------------------------------------------------

# (channel, provider name) -> provider; filled by each channel package's providers module.
PROVIDERS: dict[tuple[str, str], Provider] = {}


def provider_register(provider: Provider) -> Provider:
    """Make `provider` configurable for its channel under its name (PUT /api/v1/providers/{channel})."""
    PROVIDERS[(provider.channel, provider.name)] = provider
    return provider


def providers_of(channel: str) -> list[str]:
    return sorted(name for kind, name in PROVIDERS if kind == channel)


@dataclass
class Configured:
    provider: Provider
    credentials: dict
    options: dict


def provider_for(delivery, memo: dict) -> Configured | None:
    """The provider configured for a delivery's channel: its organization's, else its product's."""
    from apps.deliveries.models import ProviderConfig

    key = (delivery.product_id, delivery.organization_id, delivery.channel)
    if key not in memo:
        configs = {
            c.organization_id: c
            for c in ProviderConfig.objects.filter(
                product_id=delivery.product_id,
                channel=delivery.channel,
                organization_id__in=[i for i in (delivery.organization_id,) if i],
            )
            | ProviderConfig.objects.filter(
                product_id=delivery.product_id, channel=delivery.channel, organization__isnull=True
            )
        }
        config = configs.get(delivery.organization_id) or configs.get(None)
        memo[key] = config and Configured(
            PROVIDERS[(config.channel, config.provider)], json.loads(config.credentials), config.options
        )
    return memo[key]
