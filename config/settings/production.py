"""Production: every secret must come from the environment (see apps/core/checks.py)."""

from .base import *  # noqa: F403
from .base import env

SECRET_KEY = env("DJANGO_SECRET_KEY")
# What base.py defaults to the developer's machine must be said by a deploy: without it, a forgotten
# ROWBELL_PUBLIC_URL would put 127.0.0.1 in every tracking link and provider webhook URL, and a forgotten
# DATABASE_URL would quietly use a local database. Each raises ImproperlyConfigured ("Set the ... environment
# variable"), so `release` fails, naming it.
for _required in ("DATABASE_URL", "REDIS_URL", "ROWBELL_PUBLIC_URL", "DJANGO_ALLOWED_HOSTS"):
    env(_required)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=True)
CSRF_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=True)
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

# HTTPS. Behind a proxy that terminates TLS, the proxy must set X-Forwarded-Proto (above); a platform whose
# health check calls plain HTTP lists its path in DJANGO_SECURE_REDIRECT_EXEMPT (regular expressions).
# https://docs.djangoproject.com/en/5.2/ref/middleware/#http-strict-transport-security
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
SECURE_REDIRECT_EXEMPT = env.list("DJANGO_SECURE_REDIRECT_EXEMPT", default=[])
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=False)
# Asking browsers to preload HSTS commits the whole domain, for good: the domain's owner opts in with
# DJANGO_SECURE_HSTS_PRELOAD=true; until then Django's reminder (security.W021) is silenced.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
