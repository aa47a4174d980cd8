"""SMS providers: Twilio, and any HTTP gateway."""

from __future__ import annotations

import base64
import json
from urllib.parse import urlencode

from django.conf import settings
from rest_framework import serializers

from apps.core import fields as strict
from apps.deliveries import outbound

from ..providers import HttpGateway, Provider, provider_register
from .addresses import E164


class Twilio(Provider):
    """Twilio Programmable Messaging: POST /2010-04-01/Accounts/{AccountSid}/Messages.json, form-encoded
    To, From (or MessagingServiceSid) and Body, with HTTP basic auth (Account SID, Auth Token)."""

    channel, name, title = "sms", "twilio", "Twilio"
    ok_statuses = (200, 201)

    class Credentials(serializers.Serializer):
        account_sid = strict.RegexField(
            r"^AC[0-9a-f]{32}$", error_messages={"invalid": "An Account SID: AC followed by 32 hexadecimal digits."}
        )
        auth_token = strict.RegexField(
            r"^[0-9a-f]{32}$", error_messages={"invalid": "An Auth Token: 32 hexadecimal digits."}
        )

    class Options(serializers.Serializer):
        sender = strict.RegexField(
            E164,
            required=False,
            error_messages={"invalid": "An E.164 number, e.g. +14155550123."},
            help_text="The From number.",
        )
        messaging_service_sid = strict.RegexField(
            r"^MG[0-9a-f]{32}$",
            required=False,
            error_messages={"invalid": "A Messaging Service SID: MG followed by 32 hexadecimal digits."},
        )

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
        return outbound.Post(
            f"{settings.ROWBELL_TWILIO_API_URL}/2010-04-01/Accounts/{sid}/Messages.json",
            urlencode(form).encode(),
            {
                "Content-Type": "application/x-www-form-urlencoded",
                "Authorization": f"Basic {token}",
                "Accept": "application/json",
            },
        )

    def refusal(self, answer):
        try:  # {"code": 21211, "message": "...", "more_info": "https://www.twilio.com/docs/errors/21211"}
            error = json.loads(answer.excerpt)
            return f"error {error['code']}: {error['message']}"
        except (ValueError, KeyError, TypeError):
            return super().refusal(answer)


class HttpSms(HttpGateway):
    __doc__ = HttpGateway.__doc__
    channel, title = "sms", "The SMS gateway"


provider_register(Twilio())
provider_register(HttpSms())
