"""Local development: `make run`. Debug on, email to the demo sink, loopback allowed for the demo sink."""

from typing import cast

from .base import *  # noqa: F403
from .base import LOGGING, env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
SECRET_KEY = env("DJANGO_SECRET_KEY", default="local-only-insecure-secret-key-change-me-0123456789")
# Email goes to the SMTP server of `make run`'s sink (its `sink` process), which shows every message on its page,
# http://127.0.0.1:8001/; EMAIL_BACKEND=django.core.mail.backends.console.EmailBackend prints them instead.
EMAIL_BACKEND = env("EMAIL_BACKEND", default="django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env("EMAIL_HOST", default="127.0.0.1")
EMAIL_PORT = env.int("EMAIL_PORT", default=8025)
# `make run` sets ROWBELL_LOG_LEVEL for every process it starts: WARNING, or INFO with VERBOSE=1.
_root = cast(dict, LOGGING["root"])
_root["level"] = env("ROWBELL_LOG_LEVEL", default=_root["level"]).upper()
ROWBELL_OUTBOUND_ALLOW = env.list("ROWBELL_OUTBOUND_ALLOW", default=["127.0.0.0/8", "::1/128"])
ROWBELL_OUTBOUND_SHOW_INTERNAL_ANSWERS = env.bool("ROWBELL_OUTBOUND_SHOW_INTERNAL_ANSWERS", default=True)
ROWBELL_CONNECTION_ALLOW = env.list("ROWBELL_CONNECTION_ALLOW", default=["127.0.0.0/8", "::1/128"])
ROWBELL_ENCRYPTION_KEYS = env.list("ROWBELL_ENCRYPTION_KEYS", default=["bG9jYWwtb25seS1rZXktZG8tbm90LXVzZS1pbi1wcm8="])

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Serve static files from the finders; no collectstatic needed outside production.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
