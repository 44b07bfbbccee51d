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

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # The demo's worker writes while the command that follows it reads:
    # write-ahead logging lets them work at once, and the busy timeout makes
    # a writer wait for another instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {}).update(  # noqa: F405
        {"init_command": "PRAGMA journal_mode=WAL;", "timeout": 20}
    )
