"""Settings shared by every environment.

Values come from the environment through django-environ. The development,
test and production modules import this one and change only what differs.
"""

from decimal import Decimal, InvalidOperation
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)

# Required everywhere but development, which sets its own default.
SECRET_KEY = env.str("SECRET_KEY", default="")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "customers",
    "agents",
    "billing",
    "portal",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"

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

WSGI_APPLICATION = "config.wsgi.application"

# The embedded default is a SQLite file, so `make demo` needs no server.
# PostgreSQL is the production and test database.
DATABASES = {
    "default": env.db_url(
        "DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'agentmargin.sqlite3'}"
    ),
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # SQLite has no NULLS NOT DISTINCT, so it lets two Anthropic comparisons
    # of one day and model with no customer coexist. The reconciliation
    # writes them with update_or_create, and PostgreSQL enforces the rule.
    SILENCED_SYSTEM_CHECKS = ["models.W047"]

AUTH_PASSWORD_VALIDATORS = [
    {
        "NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"
    },
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Customers log in to the portal. Staff use the admin's own login page.
LOGIN_URL = "portal:login"
LOGIN_REDIRECT_URL = "portal:dashboard"

# Email of the portal: verification links, invitations, password resets.
# EMAIL_URL is a django-environ URL such as smtp+tls://user:password@host:587.
# The default prints each email to the console.
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
DEFAULT_FROM_EMAIL = env.str(
    "DEFAULT_FROM_EMAIL", default="AgentMargin <noreply@localhost>"
)

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")

# Agent runs ------------------------------------------------------------
# A run with no result after this many seconds is interrupted through the
# SDK client and ends `interrupted` (the soft limit).
AGENTMARGIN_RUN_TIMEOUT_SECONDS = env.int(
    "AGENTMARGIN_RUN_TIMEOUT_SECONDS", default=1800
)
# Celery's own limits back the run timeout up: the soft one lets the task
# close the execution, the hard one kills the worker process.
AGENTMARGIN_TASK_SOFT_TIME_LIMIT = AGENTMARGIN_RUN_TIMEOUT_SECONDS + 60
AGENTMARGIN_TASK_HARD_TIME_LIMIT = AGENTMARGIN_TASK_SOFT_TIME_LIMIT + 120
# Executions a customer may have running at once; more wait in `queued`.
AGENTMARGIN_CUSTOMER_CONCURRENCY = env.int(
    "AGENTMARGIN_CUSTOMER_CONCURRENCY", default=4
)
# A running execution whose worker has not written a heartbeat for
# AGENTMARGIN_STALE_AFTER_SECONDS is taken as dead and swept.
AGENTMARGIN_HEARTBEAT_SECONDS = env.int("AGENTMARGIN_HEARTBEAT_SECONDS", default=15)
AGENTMARGIN_STALE_AFTER_SECONDS = env.int("AGENTMARGIN_STALE_AFTER_SECONDS", default=90)
# A running execution's heartbeat thread reads this often whether the
# customer asked to cancel it.
AGENTMARGIN_CANCEL_POLL_SECONDS = env.float(
    "AGENTMARGIN_CANCEL_POLL_SECONDS", default=1.0
)

# The recorder's PostgreSQL writes (agents.message_writer): named prepared
# statements, and pipelining.
AGENTMARGIN_RECORDER_PREPARED_STATEMENTS = env.bool(
    "AGENTMARGIN_RECORDER_PREPARED_STATEMENTS", default=True
)
AGENTMARGIN_RECORDER_PIPELINE = env.bool("AGENTMARGIN_RECORDER_PIPELINE", default=True)

# Live progress: each recorded message is published to Redis pub/sub.
AGENTMARGIN_LIVE_UPDATES = env.bool("AGENTMARGIN_LIVE_UPDATES", default=True)
AGENTMARGIN_LIVE_CHANNEL_PREFIX = env.str(
    "AGENTMARGIN_LIVE_CHANNEL_PREFIX", default="agentmargin"
)
# An event stream is closed after this long, because each open one keeps
# a web worker thread busy.
AGENTMARGIN_LIVE_STREAM_MAX_SECONDS = env.int(
    "AGENTMARGIN_LIVE_STREAM_MAX_SECONDS", default=3600
)

# Budgets and alerts ------------------------------------------------------
# Worst-case cost reserved against a customer's hard budget by a run whose
# workflow has no per-run budget. It is also that run's cost limit.
AGENTMARGIN_DEFAULT_RUN_RESERVATION_USD = env.str(
    "AGENTMARGIN_DEFAULT_RUN_RESERVATION_USD", default="1.00"
)
# Seconds a worker process keeps a customer's alert rules and period
# figures before reading them again.
AGENTMARGIN_ALERT_CACHE_SECONDS = env.int("AGENTMARGIN_ALERT_CACHE_SECONDS", default=30)
# Alert emails go to these addresses. Empty means every active staff user
# with an email address.
AGENTMARGIN_ALERT_EMAILS = env.list("AGENTMARGIN_ALERT_EMAILS", default=[])
# Optional: alerts are also POSTed as signed JSON to this URL.
AGENTMARGIN_ALERT_WEBHOOK_URL = env.str("AGENTMARGIN_ALERT_WEBHOOK_URL", default="")
AGENTMARGIN_ALERT_WEBHOOK_SECRET = env.str(
    "AGENTMARGIN_ALERT_WEBHOOK_SECRET", default=""
)
# Retries of a failed alert delivery, per channel, with growing delays.
AGENTMARGIN_ALERT_DELIVERY_RETRIES = env.int(
    "AGENTMARGIN_ALERT_DELIVERY_RETRIES", default=5
)

# REST API ----------------------------------------------------------------
# Customers' systems authenticate with an API key (`Authorization: Bearer`),
# staff with their session or a DRF token (`Authorization: Token`). Each
# view names the ones it accepts; see api/ and the README's API section.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "customers.api.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["api.parsers.SafeJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "api.errors.exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        # Requests per API key, and per staff user.
        "api_key": env.str("AGENTMARGIN_API_KEY_RATE", default="120/minute"),
        "staff": env.str("AGENTMARGIN_API_STAFF_RATE", default="600/minute"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "AgentMargin API",
    "DESCRIPTION": (
        "Start agent runs, follow them and read usage, plans and invoices. "
        "Authenticate with `Authorization: Bearer <API key>`; staff endpoints "
        "take a staff session or `Authorization: Token <token>`."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and Redoc come from the drf-spectacular-sidecar package
    # and are served as static files, not from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "api.schema.add_error_responses",
    ],
}
# The API's rate limits count in Redis, so every web process shares them.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "api_throttle": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "agentmargin-api",
        "TIMEOUT": 3600,
        # A Redis that does not respond delays a request by at most this.
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    },
}

# Celery ------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_TASK_DEFAULT_QUEUE = env.str("AGENTMARGIN_TASK_QUEUE", default="agentmargin")
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Redis hands an unacknowledged message to another worker after the
# visibility timeout. It must outlast the longest task, or a run still in
# progress would be delivered twice.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": AGENTMARGIN_TASK_HARD_TIME_LIMIT + 600,
}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# A new pool process imports the Agent SDK and freezes its start-up objects
# (config.worker) before it reports ready, which on a busy machine can take
# longer than Celery's default of 4 seconds.
CELERY_WORKER_PROC_ALIVE_TIMEOUT = 30

# Anthropic API. An empty base URL means the SDK's default, the real API.
ANTHROPIC_BASE_URL = env.str("ANTHROPIC_BASE_URL", default="")
ANTHROPIC_API_KEY = env.str("ANTHROPIC_API_KEY", default="")
# Anthropic Admin API key (sk-ant-admin...), read by the reconciliation with
# Anthropic's usage and cost reports; empty turns the reconciliation off.
ANTHROPIC_ADMIN_API_KEY = env.str("ANTHROPIC_ADMIN_API_KEY", default="")
# Empty means the SDK's default, Anthropic's API.
ANTHROPIC_ADMIN_BASE_URL = env.str("ANTHROPIC_ADMIN_BASE_URL", default="")
# A comparison raises an alert when our cost differs from Anthropic's by more
# than this percentage and by more than the minimum amount.
ANTHROPIC_RECONCILE_THRESHOLD_PERCENT = env.str(
    "ANTHROPIC_RECONCILE_THRESHOLD_PERCENT", default="5"
)
ANTHROPIC_RECONCILE_MIN_DIFFERENCE_USD = env.str(
    "ANTHROPIC_RECONCILE_MIN_DIFFERENCE_USD", default="0.01"
)

STRIPE_API_KEY = env.str("STRIPE_API_KEY", default="")
STRIPE_WEBHOOK_SECRET = env.str("STRIPE_WEBHOOK_SECRET", default="")
# Empty means stripe-python's defaults, Stripe's own hosts.
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="")
STRIPE_METER_EVENTS_API_BASE = env.str("STRIPE_METER_EVENTS_API_BASE", default="")
# A webhook whose signed timestamp is older than this is rejected.
STRIPE_WEBHOOK_TOLERANCE_SECONDS = env.int(
    "STRIPE_WEBHOOK_TOLERANCE_SECONDS", default=300
)
# Retries of a Stripe request after a 429, a 5xx or a connection error, with
# exponential backoff from the base delay, capped, plus random jitter.
STRIPE_MAX_RETRIES = env.int("STRIPE_MAX_RETRIES", default=5)
STRIPE_RETRY_BASE_SECONDS = env.float("STRIPE_RETRY_BASE_SECONDS", default=0.5)
STRIPE_RETRY_MAX_SECONDS = env.float("STRIPE_RETRY_MAX_SECONDS", default=30.0)
# The metering sweep sends this many pending meter events or more through
# the v2 meter event stream, in requests of 100; fewer go one by one.
STRIPE_METER_STREAM_THRESHOLD = env.int("STRIPE_METER_STREAM_THRESHOLD", default=100)

# Working directory of agent runs; the CLI's file tools act inside it.
AGENTMARGIN_AGENT_CWD = env.path(
    "AGENTMARGIN_AGENT_CWD", default=BASE_DIR / "var" / "agent-workspace"
)
# The CLI's own state (session transcripts, settings) goes here rather than
# into the home directory of the user running the worker. Empty means ~/.claude.
AGENTMARGIN_CLAUDE_CONFIG_DIR = env.str(
    "AGENTMARGIN_CLAUDE_CONFIG_DIR", default=str(BASE_DIR / "var" / "claude-config")
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="WARNING")},
    "loggers": {
        "agents": {"level": env.str("LOG_LEVEL", default="INFO")},
        "billing": {"level": env.str("LOG_LEVEL", default="INFO")},
        "customers": {"level": env.str("LOG_LEVEL", default="INFO")},
    },
}


def parse_usd(name: str, value: str) -> Decimal:
    """Return a setting's USD amount as a Decimal; raise ImproperlyConfigured if invalid."""
    try:
        amount = Decimal(value)
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite() or amount <= 0:
        raise ImproperlyConfigured(
            f"{name} is {value!r}; set it to an amount in USD above zero, e.g. 1.00."
        )
    return amount


AGENTMARGIN_DEFAULT_RUN_RESERVATION_USD = parse_usd(
    "AGENTMARGIN_DEFAULT_RUN_RESERVATION_USD", AGENTMARGIN_DEFAULT_RUN_RESERVATION_USD
)
if AGENTMARGIN_ALERT_WEBHOOK_URL and not AGENTMARGIN_ALERT_WEBHOOK_SECRET:
    raise ImproperlyConfigured(
        "AGENTMARGIN_ALERT_WEBHOOK_URL is set but AGENTMARGIN_ALERT_WEBHOOK_SECRET "
        "is empty. Set a shared secret, which signs every alert sent to the webhook."
    )


def require_secret_key(secret_key: str) -> str:
    """Raise ImproperlyConfigured unless a usable SECRET_KEY is set."""
    if len(secret_key) < 50:
        raise ImproperlyConfigured(
            "SECRET_KEY is missing or shorter than 50 characters. Set it in "
            "the environment, for example with: python -c 'import secrets; "
            "print(secrets.token_urlsafe(50))'"
        )
    return secret_key
