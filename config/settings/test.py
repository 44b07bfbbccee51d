"""Test settings: PostgreSQL and Redis on localhost unless the environment says otherwise."""

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

# Tests never reach Anthropic; each agent test points the runner at the
# local simulator explicitly.
ANTHROPIC_BASE_URL = ""
ANTHROPIC_API_KEY = ""
STRIPE_API_KEY = ""
