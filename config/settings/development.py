"""Local development and `make demo`: SQLite by default, DEBUG on."""

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DEBUG", default=True)

# A fixed key is acceptable only on a developer's machine; production
# settings refuse to start without a real one.
SECRET_KEY = env.str(
    "SECRET_KEY",
    default="development-only-not-secret-0123456789abcdefghijklmnopqrstuvwxyz",
)
