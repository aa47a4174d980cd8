import codecs
import io
import re
from decimal import Decimal

from django.conf import settings
from rest_framework import exceptions, serializers, status
from rest_framework.parsers import JSONParser, get_encoding
from rest_framework.utils import json as drf_json

from .text import unstorable_find

# Only a body with one of these escapes can hold a string PostgreSQL cannot store: raw UTF-8 cannot
# encode a surrogate (the decoder refuses it) and a raw NUL byte is not valid inside a JSON string.
_ESCAPES_TO_CHECK = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"
    default_detail = "The request body is too large."


class BoundedJSONParser(JSONParser):
    """JSON parser that refuses bodies over ROWBELL_MAX_BODY_BYTES before decoding them, and strings
    that cannot be stored.

    DRF reads the request stream directly, so Django's DATA_UPLOAD_MAX_MEMORY_SIZE never applies;
    this reads at most limit + 1 bytes, whatever Content-Length claims.

    A string holding U+0000 or an unpaired surrogate (apps/core/text.py) anywhere in the body is a 400
    naming its place (`data.x`), whichever endpoint receives it: raises `serializers.ValidationError`.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.ROWBELL_MAX_BODY_BYTES
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
        try:
            parsed = self.decode(raw, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply.") from None
        except exceptions.ParseError as exc:
            # Where the parser stopped, and what to do: the body is read as JSON (RFC 8259) only.
            raise exceptions.ParseError(
                f"{exc.detail} The body must be valid JSON (RFC 8259): look for a missing quote or comma, a "
                "trailing comma or single quotes there."
            ) from None
        if _ESCAPES_TO_CHECK.search(raw):
            found = unstorable_find(parsed)
            if found:
                path, message = found
                raise serializers.ValidationError({path or "non_field_errors": [message]})
        return parsed

    def decode(self, raw: bytes, media_type, parser_context):
        """The body's JSON value, as DRF's JSONParser reads it (raises ParseError)."""
        return super().parse(io.BytesIO(raw), media_type, parser_context)


class ExactJSONParser(BoundedJSONParser):
    """BoundedJSONParser whose numbers with a fraction or an exponent are Decimal, with every digit written
    (apps.core.exactjson): for bodies that carry a customer's row keys and column values, where the float
    1.2345678901234567 names another row than 1.23456789012345678901. Integers are ints (exact) either way.
    Fields reading such a body take Decimal: apps.core.fields.JSONField, FloatField.
    """

    def decode(self, raw: bytes, media_type, parser_context):
        try:
            text = codecs.decode(raw, get_encoding(parser_context or {}))
            return drf_json.loads(text, parse_float=Decimal, parse_constant=drf_json.strict_constant)
        except ValueError as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None
