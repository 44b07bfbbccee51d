"""Test settings: PostgreSQL and Redis on localhost unless the environment sets other URLs."""

import os

from .base import *  # noqa: F403
from .base import env

SECRET_KEY = "test-only-not-secret-0123456789abcdefghijklmnopqrstuvwxyz-0123"

DATABASES = {
    "default": env.db_url(
        "DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/agentmargin"
    ),
}

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

# Tests never reach Anthropic: the API key from the environment is ignored,
# and the base URL is only ever the local simulator, which the worker tests
# pass to their Celery workers through AGENTMARGIN_TEST_SIMULATOR_URL.
ANTHROPIC_BASE_URL = env.str("AGENTMARGIN_TEST_SIMULATOR_URL", default="")
ANTHROPIC_API_KEY = ""
ANTHROPIC_ADMIN_API_KEY = ""
ANTHROPIC_ADMIN_BASE_URL = ""
STRIPE_API_KEY = ""

# A queue of this test run's own, so a developer's worker never takes test
# tasks, and two test runs never share one. Worker tests hand the name to
# their Celery workers through the same variable.
CELERY_TASK_DEFAULT_QUEUE = env.str(
    "AGENTMARGIN_TASK_QUEUE", default=f"agentmargin-test-{os.getpid()}"
)
