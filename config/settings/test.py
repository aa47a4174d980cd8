"""Tests: the real PostgreSQL and Redis (database 15, so a running `make run` is left alone)."""

from urllib.parse import urlsplit

from .base import *  # noqa: F403
from .base import CACHES, env

SECRET_KEY = "test-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
CELERY_BROKER_URL = env("TEST_REDIS_URL", default="redis://127.0.0.1:6379/15")
# Throttle counters on the same Redis, database 13 (tests flush it between tests; the broker is left alone).
CACHES["ratelimits"]["LOCATION"] = env(
    "TEST_CACHE_URL", default=urlsplit(CELERY_BROKER_URL)._replace(path="/13").geturl()
)
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# In-process tests read mail.outbox; worker processes started by the tests send to a local SMTP server.
if env("TEST_EMAIL_PORT", default=""):
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_HOST = "127.0.0.1"
    EMAIL_PORT = env.int("TEST_EMAIL_PORT")
else:
    EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
ROWBELL_OUTBOUND_ALLOW = ["127.0.0.0/8", "::1/128"]
ROWBELL_OUTBOUND_SHOW_INTERNAL_ANSWERS = True
ROWBELL_CONNECTION_ALLOW = ["127.0.0.0/8", "::1/128"]
ROWBELL_ENCRYPTION_KEYS = ["dGVzdC1vbmx5LWtleS1kby1ub3QtdXNlLWluLXByb2Q="]
ROWBELL_RETRY_BASE_SECONDS = env.float("ROWBELL_RETRY_BASE_SECONDS", default=0.2)
ROWBELL_RETRY_MAX_SECONDS = env.float("ROWBELL_RETRY_MAX_SECONDS", default=1.0)
ROWBELL_DELIVERY_MAX_ATTEMPTS = env.int("ROWBELL_DELIVERY_MAX_ATTEMPTS", default=3)
# Three attempts, a fraction of a second apart, on every channel.
ROWBELL_RETRY_SCHEDULE_WEBHOOK = ROWBELL_RETRY_SCHEDULE_EMAIL = ROWBELL_RETRY_SCHEDULE_SMS = [0.2, 0.4]
ROWBELL_RETRY_SCHEDULE_PUSH = ROWBELL_RETRY_SCHEDULE_CHAT = ROWBELL_RETRY_SCHEDULE_STEP = [0.2, 0.4]
ROWBELL_ENDPOINT_DISABLE_AFTER_FAILURES = env.int("ROWBELL_ENDPOINT_DISABLE_AFTER_FAILURES", default=1)
ROWBELL_REQUEUE_AFTER_SECONDS = env.float("ROWBELL_REQUEUE_AFTER_SECONDS", default=2.0)
ROWBELL_LEASE_SECONDS = env.float("ROWBELL_LEASE_SECONDS", default=20.0)
ROWBELL_RECONCILE_INTERVAL = env.float("ROWBELL_RECONCILE_INTERVAL", default=1.0)
ROWBELL_HTTP_TIMEOUT = 5.0
ROWBELL_DASHBOARD_CACHE_SECONDS = 0.0
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Serve static files from the finders; no collectstatic needed outside production.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
