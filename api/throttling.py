"""Rate limits per API key and per staff user, counted in Redis.

The rates are `REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["api_key"]` and
`["staff"]`, read at each request. When Redis cannot be reached the
request is let through and a warning is logged at most once a minute:
an outage of the counter should not take the API down.
"""

from __future__ import annotations

import logging
import time

import redis
from django.core.cache import caches
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from customers.models import ApiKey

logger = logging.getLogger(__name__)

CACHE_ALIAS = "api_throttle"
WARNING_INTERVAL_SECONDS = 60.0
_last_warning = 0.0


class RedisRateThrottle(SimpleRateThrottle):
    """A SimpleRateThrottle whose counts live in the shared Redis cache."""

    def __init__(self):
        self.cache = caches[CACHE_ALIAS]
        super().__init__()

    def get_rate(self):
        # Read per request rather than once per class, so a changed
        # setting applies at once.
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def allow_request(self, request, view):
        global _last_warning
        try:
            return super().allow_request(request, view)
        except redis.RedisError as exc:
            now = time.monotonic()
            if now - _last_warning >= WARNING_INTERVAL_SECONDS:
                _last_warning = now
                logger.warning(
                    "API rate limit not checked, Redis failed; request let through: %s",
                    exc,
                )
            return True


class ApiKeyRateThrottle(RedisRateThrottle):
    """Limits the requests of each API key."""

    scope = "api_key"

    def get_cache_key(self, request, view):
        if not isinstance(request.auth, ApiKey):
            return None
        # The prefix is random and unique, unlike an id that a recreated
        # database hands out again.
        return self.cache_format % {"scope": self.scope, "ident": request.auth.prefix}


class StaffRateThrottle(RedisRateThrottle):
    """Limits the requests of each staff user."""

    scope = "staff"

    def get_cache_key(self, request, view):
        user = request.user
        if (
            user is None
            or not user.is_authenticated
            or isinstance(request.auth, ApiKey)
        ):
            return None
        return self.cache_format % {"scope": self.scope, "ident": user.pk}
