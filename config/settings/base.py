"""Settings shared by every environment, read from the environment by django-environ.

Every variable is listed, with its default, in `.env.example` (tests/core/test_env_example.py holds it to that).
"""

import os
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
# The .env file (DJANGO_ENV_FILE). Local and test settings read it: `make run` and `make test` keep their
# configuration there. Every other settings module, production first, reads it only with
# DJANGO_READ_DOT_ENV_FILE=true, as cookiecutter-django does: a deploy is configured by its platform's
# environment, and a .env left in the build must not quietly fill in what that leaves unset. Variables already in
# the environment win either way. (Django picks the settings module before importing it, so
# DJANGO_SETTINGS_MODULE names the module being read.)
# https://cookiecutter-django.readthedocs.io/en/latest/1-getting-started/settings.html
_reads_dot_env = os.environ.get("DJANGO_SETTINGS_MODULE") in ("config.settings.local", "config.settings.test")
if env.bool("DJANGO_READ_DOT_ENV_FILE", default=_reads_dot_env):
    environ.Env.read_env(env("DJANGO_ENV_FILE", default=str(BASE_DIR / ".env")), overwrite=False)

SECRET_KEY = env("DJANGO_SECRET_KEY", default="")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])

INSTALLED_APPS = [
    "apps.dashboard.apps.RowbellAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
    "django_celery_beat",
    "anymail",
    "axes",
    "apps.core",
    "apps.audit",
    "apps.tenants",
    "apps.connections",
    "apps.workflows",
    "apps.runs",
    "apps.deliveries",
    "apps.subscriptions",
    "apps.builder",
    "apps.dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "apps.core.middleware.NulParameterMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "apps.core.middleware.DatabaseUnavailableMiddleware",
    # Last, as django-axes asks: turns a locked-out admin login into its lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/rowbell")}
# Persistent connections: the trigger API would otherwise pay a connection set-up per request.
# https://docs.djangoproject.com/en/5.2/ref/databases/#persistent-connections
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=600)
# Off by default: the check is a `SELECT 1` round trip at the start of every request (0.45 ms of
# machine time per trigger call, measured). Without it, a connection that died (database restart)
# fails one request with a 503 and Retry-After (apps/core/middleware.py), and Django discards it.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("DATABASE_HEALTH_CHECKS", default=False)
# Django turns psycopg's prepared statements off so that transaction-mode poolers work. Django's own
# queries bind on the client and are never prepared either way; enabling them lets the trigger
# statement (apps/runs/services.py) be planned once per connection. Set to false behind a
# transaction-mode PgBouncer older than 1.21.
# https://docs.djangoproject.com/en/5.2/ref/databases/#server-side-parameters-binding
if env.bool("DATABASE_PREPARED_STATEMENTS", default=True):
    DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = 1000
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Admin logins and API throttles ("Logins and keys" in README.md) ---------------------------------
# django-axes locks a username from one address (IPv6: one /64) out of the admin after ROWBELL_LOGIN_FAILURE_LIMIT
# failures (from every address after ROWBELL_LOGIN_FAILURE_LIMIT_PER_USERNAME from all of them together),
# for ROWBELL_LOGIN_COOLOFF_SECONDS, doubled by each attempt made while locked, up to the maximum
# (apps/dashboard/logins.py). Its database handler: the state is shared and lasts, admins can read it
# and lift a lock (delete the "access attempt"), and back-off reads each lock's failure count.
# https://django-axes.readthedocs.io/en/latest/4_configuration.html
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env.int("ROWBELL_LOGIN_FAILURE_LIMIT", default=5)
ROWBELL_LOGIN_COOLOFF_SECONDS = env.int("ROWBELL_LOGIN_COOLOFF_SECONDS", default=600)
ROWBELL_LOGIN_COOLOFF_MAX_SECONDS = env.int("ROWBELL_LOGIN_COOLOFF_MAX_SECONDS", default=24 * 3600)
AXES_COOLOFF_TIME = "apps.dashboard.logins.lockout_cool_off"
AXES_LOCKOUT_CALLABLE = "apps.dashboard.logins.lockout_response"
# Per username and address; per username alone only past a much higher limit (apps/dashboard/logins.py).
AXES_LOCKOUT_PARAMETERS = "apps.dashboard.logins.lockout_parameters"
ROWBELL_LOGIN_FAILURE_LIMIT_PER_USERNAME = env.int("ROWBELL_LOGIN_FAILURE_LIMIT_PER_USERNAME", default=50)
AXES_CLIENT_IP_CALLABLE = "apps.core.ratelimits.client_ip"
AXES_USE_ATTEMPT_EXPIRATION = True  # each lock expires on its own cool-off, not on the latest request's
AXES_RESET_ON_SUCCESS = True
# The API's throttles (apps/tenants/throttles.py): calls per product, organization or platform key (trigger
# calls on a budget of their own: 60000/min is 1,000/s, Rowbell's own delivery target), and failed
# authentications per client address (IPv6: per /64) and per key prefix, which refuse failed authentications
# only, never a valid key. "<n>/<unit>" or "<n>/<k><unit>", unit s|m|h|d.
ROWBELL_API_RATE = env("ROWBELL_API_RATE", default="1200/min")
ROWBELL_TRIGGER_RATE = env("ROWBELL_TRIGGER_RATE", default="60000/min")
ROWBELL_AUTH_FAILURES_PER_IP = env("ROWBELL_AUTH_FAILURES_PER_IP", default="50/10m")
ROWBELL_AUTH_FAILURES_PER_PREFIX = env("ROWBELL_AUTH_FAILURES_PER_PREFIX", default="20/10m")
# Proxies in front of Rowbell that append to X-Forwarded-For: the client is the address they saw (0: the
# socket's peer). Behind a proxy, 0 would count every client as the proxy.
ROWBELL_NUM_PROXIES = env.int("ROWBELL_NUM_PROXIES", default=0)
# The counters live in Redis, shared by every web process. Short timeouts: a throttle that cannot count lets
# the call through (apps/core/ratelimits.py) instead of holding it.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "ratelimits": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": env("ROWBELL_CACHE_URL", default=env("REDIS_URL", default="redis://127.0.0.1:6379/0")),
        "KEY_PREFIX": "rowbell",
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    },
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Where `collectstatic` writes, and WhiteNoise serves from in production (the Procfile's `web` collects first).
STATIC_ROOT = Path(env("DJANGO_STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
# The Procfile's `web` collects the static files before it starts (manage.py static_collect). Off where a build
# step collected them already and the file system is read-only at run time.
ROWBELL_COLLECTSTATIC_AT_START = env.bool("ROWBELL_COLLECTSTATIC_AT_START", default=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

ADMINS = [tuple(a.split(":", 1)) for a in env.list("DJANGO_ADMINS", default=[])]

# --- Email -------------------------------------------------------------------------------------
EMAIL_BACKEND = env("EMAIL_BACKEND", default="django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="Rowbell <notifications@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- REST framework ----------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["apps.tenants.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["apps.core.permissions.IsTenant"],
    "DEFAULT_PARSER_CLASSES": ["apps.core.parsers.BoundedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["apps.core.renderers.ExactJSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "apps.core.openapi.RowbellAutoSchema",
    "EXCEPTION_HANDLER": "apps.core.exceptions.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_PAGINATION_CLASS": None,
    "DEFAULT_THROTTLE_CLASSES": ["apps.tenants.throttles.PrincipalRateThrottle"],
    "NUM_PROXIES": ROWBELL_NUM_PROXIES,
}
# Largest accepted API request body; bigger bodies answer 413 before they are parsed.
ROWBELL_MAX_BODY_BYTES = env.int("ROWBELL_MAX_BODY_BYTES", default=256 * 1024)

SPECTACULAR_SETTINGS = {
    "TITLE": "Rowbell API",
    "DESCRIPTION": "Notification workflows driven by your PostgreSQL. Authenticate with `Authorization: Api-Key <key>`.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "COMPONENT_SPLIT_REQUEST": True,
    # The API docs' scripts and styles (Swagger UI and ReDoc) are served from here (drf-spectacular-sidecar), not
    # from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Content-Security-Policy on every page (django-csp): the admin, the console and the API docs load
# scripts, styles, images and fonts from this origin only, run no inline script, and cannot be framed.
# ReDoc's page (/api/redoc/) adds inline styles and a blob: worker to this, by a decorator in config/urls.py.
# https://django-csp.readthedocs.io/en/latest/configuration.html
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# --- Celery ------------------------------------------------------------------------------------
# https://docs.celeryq.dev/en/stable/userguide/configuration.html
CELERY_BROKER_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "normal"
CELERY_TASK_QUEUES_ORDER = ["high", "normal", "low"]
# 'priority' makes a worker always pop `high` before `normal` before `low`, instead of kombu's
# default round robin: a high-priority request overtakes a backlog of normal work.
# https://docs.celeryq.dev/projects/kombu/en/stable/reference/kombu.transport.redis.html
CELERY_BROKER_TRANSPORT_OPTIONS = {"queue_order_strategy": "priority", "visibility_timeout": 3600}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Celery's Django fix-up closes the database connection around every task unless this is set; each task
# would then pay a new connection (and PostgreSQL a new backend). It now closes them every 1,000 tasks,
# and config/celery_app.py drops a connection after any task that left it broken or past CONN_MAX_AGE.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE
# A backstop for work that never returns: SoftTimeLimitExceeded is raised in the task at the soft limit,
# the worker process is replaced at the hard one. Template renders stop long before (see below); tasks
# that wait on customer databases set longer limits of their own.
# https://docs.celeryq.dev/en/stable/userguide/workers.html#time-limits
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=300)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=360)

# --- Rowbell -----------------------------------------------------------------------------------
# Key for encryption at rest (webhook secrets, later database passwords and provider credentials).
# One or more comma-separated Fernet keys: the first encrypts, all decrypt (rotation).
ROWBELL_ENCRYPTION_KEYS = env.list("ROWBELL_ENCRYPTION_KEYS", default=[])
# Retry schedules: seconds to wait before each retry, per channel (the first attempt is at once; a delivery
# makes one attempt more than its schedule has delays). Each delay is a floor: up to 10% jitter is added. The
# webhook schedule is Svix's (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: 27 h 35 min 5 s in all); email retries
# for 10 h 42 min; SMS and push, whose messages go stale, for 51 min; chat for 3 h 36 min. `step` is for a
# run's step that failed for a passing reason (its customer database was unreachable).
ROWBELL_RETRY_SCHEDULE_WEBHOOK = env.list(
    "ROWBELL_RETRY_SCHEDULE_WEBHOOK", cast=float, default=[5, 300, 1800, 7200, 18000, 36000, 36000]
)
ROWBELL_RETRY_SCHEDULE_EMAIL = env.list(
    "ROWBELL_RETRY_SCHEDULE_EMAIL", cast=float, default=[30, 120, 600, 1800, 3600, 10800, 21600]
)
ROWBELL_RETRY_SCHEDULE_SMS = env.list("ROWBELL_RETRY_SCHEDULE_SMS", cast=float, default=[10, 60, 300, 900, 1800])
ROWBELL_RETRY_SCHEDULE_PUSH = env.list("ROWBELL_RETRY_SCHEDULE_PUSH", cast=float, default=[10, 60, 300, 900, 1800])
ROWBELL_RETRY_SCHEDULE_CHAT = env.list(
    "ROWBELL_RETRY_SCHEDULE_CHAT", cast=float, default=[10, 60, 300, 1800, 3600, 7200]
)
ROWBELL_RETRY_SCHEDULE_STEP = env.list(
    "ROWBELL_RETRY_SCHEDULE_STEP", cast=float, default=[5, 300, 1800, 7200, 18000, 36000, 36000]
)
# A workflow's exponential policy (`retry.backoff`, `retry.max_backoff`): attempt n waits
# min(max, base * 2**(n-1)) seconds, scaled by a jitter in [0.5, 1]; these fill what it leaves out.
ROWBELL_DELIVERY_MAX_ATTEMPTS = env.int("ROWBELL_DELIVERY_MAX_ATTEMPTS", default=8)
ROWBELL_RETRY_BASE_SECONDS = env.float("ROWBELL_RETRY_BASE_SECONDS", default=10.0)
ROWBELL_RETRY_MAX_SECONDS = env.float("ROWBELL_RETRY_MAX_SECONDS", default=6 * 3600.0)
# A webhook endpoint is disabled, and operators told, once its attempts have all failed for this long AND it
# has failed at least this many attempts since its last success: a quiet endpoint's first failure after a long
# silence does not disable it.
ROWBELL_ENDPOINT_DISABLE_AFTER_SECONDS = env.float("ROWBELL_ENDPOINT_DISABLE_AFTER_SECONDS", default=5 * 24 * 3600.0)
ROWBELL_ENDPOINT_DISABLE_AFTER_FAILURES = env.int("ROWBELL_ENDPOINT_DISABLE_AFTER_FAILURES", default=20)
# A `Retry-After` longer than this is capped to it.
ROWBELL_RETRY_AFTER_MAX_SECONDS = env.float("ROWBELL_RETRY_AFTER_MAX_SECONDS", default=24 * 3600.0)
# Retention of Rowbell's own tables (apps.runs.retention), pruned by beat every ROWBELL_RETENTION_INTERVAL
# seconds in batches of ROWBELL_RETENTION_BATCH rows (short transactions, no long locks): finished runs with
# their steps and deliveries (attempts, status history), finished requests, recorded events no run needs,
# finished operators' actions after ROWBELL_RETENTION_DAYS (a product may set its own); the audit trail after
# ROWBELL_AUDIT_RETENTION_DAYS. Held and unfinished work, and a failed run operators have not decided on, stay.
ROWBELL_RETENTION_DAYS = env.float("ROWBELL_RETENTION_DAYS", default=30.0)
ROWBELL_AUDIT_RETENTION_DAYS = env.float("ROWBELL_AUDIT_RETENTION_DAYS", default=365.0)
ROWBELL_RETENTION_INTERVAL = env.float("ROWBELL_RETENTION_INTERVAL", default=60.0)
ROWBELL_RETENTION_BATCH = env.int("ROWBELL_RETENTION_BATCH", default=2000)
# The workflow builder (apps.builder): any OpenAI-compatible endpoint (a hosted service, or a local server such
# as Ollama at http://127.0.0.1:11434/v1, vLLM or llama.cpp). Unset, the builder answers how to configure it.
ROWBELL_AI_BASE_URL = env("ROWBELL_AI_BASE_URL", default="")
ROWBELL_AI_MODEL = env("ROWBELL_AI_MODEL", default="")
ROWBELL_AI_API_KEY = env("ROWBELL_AI_API_KEY", default="")
# Seconds one call to the model may take; repair rounds after the first reply; a product's daily budget.
ROWBELL_AI_TIMEOUT_SECONDS = env.float("ROWBELL_AI_TIMEOUT_SECONDS", default=60.0)
ROWBELL_AI_ROUNDS = env.int("ROWBELL_AI_ROUNDS", default=3)
ROWBELL_AI_DAILY_CALLS = env.int("ROWBELL_AI_DAILY_CALLS", default=200)
ROWBELL_AI_DAILY_TOKENS = env.int("ROWBELL_AI_DAILY_TOKENS", default=2_000_000)
# GET /metrics (Prometheus) answers only `Authorization: Bearer <this>`; unset, the endpoint is off (404).
ROWBELL_METRICS_TOKEN = env("ROWBELL_METRICS_TOKEN", default="")
# Where recipients reach this service: email open pixels and click-through links point here.
ROWBELL_PUBLIC_URL = env("ROWBELL_PUBLIC_URL", default="http://127.0.0.1:8000")
# Open and click links older than this answer "expired" (410) instead of counting or redirecting.
ROWBELL_TRACKING_TOKEN_MAX_AGE_DAYS = env.int("ROWBELL_TRACKING_TOKEN_MAX_AGE_DAYS", default=90)
# The service-wide providers' event webhooks (/webhooks/providers/<provider>/tracking/), kept for existing
# deployments (each provider configuration has its own, apps.deliveries.provider_events): HTTP basic auth
# "user:password" (and Mailgun's signing key); until set they refuse every call.
ANYMAIL = {
    "WEBHOOK_SECRET": env("ROWBELL_PROVIDER_WEBHOOK_SECRET", default=""),
    "MAILGUN_WEBHOOK_SIGNING_KEY": env("ROWBELL_MAILGUN_WEBHOOK_SIGNING_KEY", default=""),
}
# Providers' API base URLs (overridden only to point at a local fake in tests).
ROWBELL_TWILIO_API_URL = env("ROWBELL_TWILIO_API_URL", default="https://api.twilio.com")
ROWBELL_FCM_API_URL = env("ROWBELL_FCM_API_URL", default="https://fcm.googleapis.com")
ROWBELL_SENDGRID_API_URL = env("ROWBELL_SENDGRID_API_URL", default="https://api.sendgrid.com/v3/")
ROWBELL_MAILGUN_API_URL = env("ROWBELL_MAILGUN_API_URL", default="")  # empty: by the configured region
ROWBELL_POSTMARK_API_URL = env("ROWBELL_POSTMARK_API_URL", default="https://api.postmarkapp.com/")
ROWBELL_SES_ENDPOINT_URL = env("ROWBELL_SES_ENDPOINT_URL", default="")  # empty: the region's endpoint
# Outbound HTTP: connect timeout and the budget for the whole request.
ROWBELL_HTTP_CONNECT_TIMEOUT = env.float("ROWBELL_HTTP_CONNECT_TIMEOUT", default=5.0)
ROWBELL_HTTP_TIMEOUT = env.float("ROWBELL_HTTP_TIMEOUT", default=15.0)
# Hosts or networks that outbound requests may reach although private (e.g. "127.0.0.0/8,::1").
ROWBELL_OUTBOUND_ALLOW = env.list("ROWBELL_OUTBOUND_ALLOW", default=[])
# Whether the text of answers from addresses opened only by ROWBELL_OUTBOUND_ALLOW (internal ones) is recorded
# and quoted in delivery errors that tenants read. Off: a tenant must not read an internal service through
# Rowbell. Local and test settings turn it on (their receivers are the developer's own).
ROWBELL_OUTBOUND_SHOW_INTERNAL_ANSWERS = env.bool("ROWBELL_OUTBOUND_SHOW_INTERNAL_ANSWERS", default=False)
# Work whose Celery message was sent this long ago without being picked up is sent again.
ROWBELL_REQUEUE_AFTER_SECONDS = env.float("ROWBELL_REQUEUE_AFTER_SECONDS", default=60.0)
# A claim (run or delivery being worked on) older than this is presumed dead and released.
ROWBELL_LEASE_SECONDS = env.float("ROWBELL_LEASE_SECONDS", default=120.0)
# Longest pause of the dispatcher loop when there is nothing to dispatch (seconds).
ROWBELL_DISPATCHER_IDLE_SECONDS = env.float("ROWBELL_DISPATCHER_IDLE_SECONDS", default=0.1)
# Beat periods, in seconds.
ROWBELL_DISPATCH_INTERVAL = env.float("ROWBELL_DISPATCH_INTERVAL", default=1.0)
ROWBELL_RECONCILE_INTERVAL = env.float("ROWBELL_RECONCILE_INTERVAL", default=10.0)
ROWBELL_POLL_INTERVAL = env.float("ROWBELL_POLL_INTERVAL", default=1.0)
# How often each capturing connection's backlog and lag are read for the dashboard.
ROWBELL_HEALTH_INTERVAL = env.float("ROWBELL_HEALTH_INTERVAL", default=30.0)
# The dashboard's figures are kept this long per product and range (each worker process), so that many
# operators on the home page aggregate the deliveries table once, not once each. 0: always fresh.
ROWBELL_DASHBOARD_CACHE_SECONDS = env.float("ROWBELL_DASHBOARD_CACHE_SECONDS", default=30.0)
# Triggers may send a NOTIFY (at most one per statement) so that the `listener` reads at once. Off by
# default: NOTIFY serializes commits and costs up to half of single-row write throughput (see
# docs/benchmarks.md); the listener's adaptive polling already picks changes up within a few hundred ms.
ROWBELL_CAPTURE_NOTIFY = env.bool("ROWBELL_CAPTURE_NOTIFY", default=False)
# The listener polls an active connection this often, backing off to the idle interval when quiet.
ROWBELL_PICKUP_ACTIVE_SECONDS = env.float("ROWBELL_PICKUP_ACTIVE_SECONDS", default=0.05)
ROWBELL_PICKUP_IDLE_SECONDS = env.float("ROWBELL_PICKUP_IDLE_SECONDS", default=0.25)
# Consumed events are deleted from customers' event logs once older than this (seconds), every so often.
ROWBELL_EVENT_LOG_RETENTION_SECONDS = env.float("ROWBELL_EVENT_LOG_RETENTION_SECONDS", default=7 * 24 * 3600.0)
ROWBELL_EVENT_LOG_PRUNE_INTERVAL = env.float("ROWBELL_EVENT_LOG_PRUNE_INTERVAL", default=600.0)
# How many deliveries one worker task claims and sends at once, and at most how many requests a worker
# process has in flight to one host (webhooks and the HTTP providers of SMS, push and chat).
ROWBELL_DELIVERY_BATCH = env.int("ROWBELL_DELIVERY_BATCH", default=50)
ROWBELL_DELIVERY_CONCURRENCY = env.int("ROWBELL_DELIVERY_CONCURRENCY", default=16)
# Networks customer databases may be reached on although loopback, link-local or reserved (private
# networks are always allowed). Local and test settings open loopback.
ROWBELL_CONNECTION_ALLOW = env.list("ROWBELL_CONNECTION_ALLOW", default=[])
# Customer databases: connect timeout and statement timeout (seconds).
ROWBELL_CUSTOMER_CONNECT_TIMEOUT = env.int("ROWBELL_CUSTOMER_CONNECT_TIMEOUT", default=5)
ROWBELL_CUSTOMER_STATEMENT_TIMEOUT = env.float("ROWBELL_CUSTOMER_STATEMENT_TIMEOUT", default=30.0)
# Row ids carried by one row-event webhook message; a bigger statement is sent as several messages.
ROWBELL_WEBHOOK_IDS_PER_MESSAGE = env.int("ROWBELL_WEBHOOK_IDS_PER_MESSAGE", default=1000)
# Recipients accepted by one trigger call.
ROWBELL_MAX_RECIPIENTS = env.int("ROWBELL_MAX_RECIPIENTS", default=1000)
# Rows of a database event read for a run's steps (`row`, `rows`); a bulk statement's further ids are
# still in `event.ids`.
ROWBELL_ROWS_PER_RUN = env.int("ROWBELL_ROWS_PER_RUN", default=100)
# One worker task works for one product at most this long (seconds) before that product's remaining runs
# wait behind other products' work (apps/runs/engine.py, _ProductSlices).
ROWBELL_PRODUCT_SLICE_SECONDS = env.float("ROWBELL_PRODUCT_SLICE_SECONDS", default=2.0)
# Operators hear about failed runs at most once per product per interval (each failure in one notice).
ROWBELL_ESCALATION_INTERVAL_SECONDS = env.float("ROWBELL_ESCALATION_INTERVAL_SECONDS", default=300.0)
# How often beat resumes runs whose wait is over and sends escalation notices.
ROWBELL_RESUME_INTERVAL = env.float("ROWBELL_RESUME_INTERVAL", default=1.0)
# Bounds of user templates: the time of one step's renders for one recipient (and of one save check or
# preview step), and the size of any text or list a template builds, its output included.
ROWBELL_TEMPLATE_RENDER_SECONDS = env.float("ROWBELL_TEMPLATE_RENDER_SECONDS", default=1.0)
ROWBELL_TEMPLATE_MAX_CHARS = env.int("ROWBELL_TEMPLATE_MAX_CHARS", default=1_000_000)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "filters": {"require_debug_false": {"()": "django.utils.log.RequireDebugFalse"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        # Django's own: a server error is emailed to ADMINS when DEBUG is off.
        "mail_admins": {
            "level": "ERROR",
            "filters": ["require_debug_false"],
            "class": "django.utils.log.AdminEmailHandler",
        },
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    # Django's default configuration gives `django` a console handler of its own under DEBUG, so each of its
    # lines (a 4xx's "Bad Request: ...") was printed twice, once there and once by the root's: it keeps only
    # mail_admins and passes the rest to the root.
    # https://docs.djangoproject.com/en/5.2/ref/logging/#default-logging-configuration
    "loggers": {
        "django": {"handlers": ["mail_admins"], "level": "INFO", "propagate": True},
        "django.db.backends": {"level": "WARNING"},
    },
}
