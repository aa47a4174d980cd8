"""Encryption at rest for secrets Rowbell must read back (webhook signing secrets, credentials).

Fernet (AES-128-CBC + HMAC-SHA256) with keys from ROWBELL_ENCRYPTION_KEYS; the first key
encrypts, every key decrypts, so keys rotate by prepending a new one.
"""

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured("ROWBELL_ENCRYPTION_KEYS is empty: set it to a Fernet key.")
    return MultiFernet([Fernet(k.encode()) for k in keys])


def encrypt(plaintext: str) -> str:
    return _fernet(tuple(settings.ROWBELL_ENCRYPTION_KEYS)).encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet(tuple(settings.ROWBELL_ENCRYPTION_KEYS)).decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise ImproperlyConfigured(
            "A stored secret cannot be decrypted with ROWBELL_ENCRYPTION_KEYS (was a key removed?)."
        ) from exc


class EncryptedTextField(models.TextField):
    """A text column stored encrypted; Python code only ever sees the plaintext."""

    def from_db_value(self, value, expression, connection):
        return value if not value else decrypt(value)

    def get_prep_value(self, value):
        # An empty value (e.g. no password: certificate or trust authentication) stays empty.
        value = super().get_prep_value(value)
        return value if not value else encrypt(value)


# Secrets that live inside JSON documents (a recipient's `chat_webhook`, a rendered chat payload's
# `webhook_url`) cannot use a column type: they are sealed in place as one string with this prefix, so
# that every copy of the document (request, run, delivery payload) carries the ciphertext only.
SEALED_PREFIX = "sealed:v1:"


def seal(plaintext: str) -> str:
    """`plaintext` encrypted (as `encrypt`) and marked, to be stored inside a JSON value. Sealing a value
    that is already sealed returns it as it is."""
    if is_sealed(plaintext):
        return plaintext
    return SEALED_PREFIX + encrypt(plaintext)


def unseal(value: str) -> str:
    """The plaintext of a value made by `seal`; any other string is returned unchanged (rows written
    before sealing existed). Raises ImproperlyConfigured when no configured key decrypts it."""
    return decrypt(value[len(SEALED_PREFIX) :]) if is_sealed(value) else value


def is_sealed(value) -> bool:
    """Whether `value` (any JSON value read from a document) is a string made by `seal`: it starts with
    SEALED_PREFIX. Only the prefix is looked at: nothing is decrypted, so no key is needed and nothing is
    raised; anything else (a clear URL, a number, None) is False."""
    return isinstance(value, str) and value.startswith(SEALED_PREFIX)
