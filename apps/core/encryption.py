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
