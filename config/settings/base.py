"""Settings shared by every environment.

Values come from the environment through django-environ. The development,
test and production modules import this one and change only what differs.
"""

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
    "django_celery_beat",
    "customers",
    "agents",
    "billing",
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

REST_FRAMEWORK = {
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
}

# Anthropic API. An empty base URL means the SDK's default, the real API.
ANTHROPIC_BASE_URL = env.str("ANTHROPIC_BASE_URL", default="")
ANTHROPIC_API_KEY = env.str("ANTHROPIC_API_KEY", default="")

STRIPE_API_KEY = env.str("STRIPE_API_KEY", default="")
STRIPE_WEBHOOK_SECRET = env.str("STRIPE_WEBHOOK_SECRET", default="")

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


def require_secret_key(secret_key: str) -> str:
    """Raise ImproperlyConfigured unless a usable SECRET_KEY is set."""
    if len(secret_key) < 50:
        raise ImproperlyConfigured(
            "SECRET_KEY is missing or shorter than 50 characters. Set it in "
            "the environment, for example with: python -c 'import secrets; "
            "print(secrets.token_urlsafe(50))'"
        )
    return secret_key
