"""Rate limits per API key and per staff user, counted in Redis.

The rates are `REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["api_key"]` and
`["staff"]`, read at each request. Each request is counted in a sliding
window by one Lua script, so that checking and counting are a single
atomic step in Redis and parallel requests cannot both see room for the
last one. When Redis cannot be reached the request is let through and a
warning is logged at most once a minute: an outage of the counter should
not take the API down.
"""

from __future__ import annotations

import logging
import math
import time
import uuid

import redis
from django.core.cache import caches
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from customers.models import ApiKey

logger = logging.getLogger(__name__)

CACHE_ALIAS = "api_throttle"
WARNING_INTERVAL_SECONDS = 60.0
_last_warning = 0.0


# Drops the requests that left the window, then counts this one only if
# the window has room. Returns {1, count} when counted, or {0, count,
# score of the oldest request in the window} when the limit is reached.
SLIDING_WINDOW_SCRIPT = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local count = redis.call('ZCARD', key)
if count < limit then
  redis.call('ZADD', key, now, ARGV[4])
  redis.call('EXPIRE', key, math.ceil(window))
  return {1, count + 1}
end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
return {0, count, oldest[2]}
"""


class RedisRateThrottle(SimpleRateThrottle):
    """A sliding-window rate limit whose counts live in the shared Redis cache."""

    def __init__(self):
        self.cache = caches[CACHE_ALIAS]
        self.retry_after = None
        super().__init__()

    def get_rate(self):
        # Read per request rather than once per class, so a changed
        # setting applies at once.
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def allow_request(self, request, view):
        global _last_warning
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        try:
            return self._count(self.key)
        except redis.RedisError as exc:
            now = time.monotonic()
            if now - _last_warning >= WARNING_INTERVAL_SECONDS:
                _last_warning = now
                logger.warning(
                    "API rate limit not checked, Redis failed; request let through: %s",
                    exc,
                )
            return True

    def _count(self, key: str) -> bool:
        """Count one request in the window of `key`; return whether it is allowed."""
        redis_key = self.cache.make_and_validate_key(key)
        client = self.cache._cache.get_client(redis_key, write=True)
        self.now = self.timer()
        result = client.eval(
            SLIDING_WINDOW_SCRIPT,
            1,
            redis_key,
            repr(self.now),
            self.duration,
            self.num_requests,
            uuid.uuid4().hex,
        )
        if int(result[0]) == 1:
            return True
        oldest = float(result[2]) if len(result) > 2 and result[2] else self.now
        self.retry_after = max(0.0, oldest + self.duration - self.now)
        return False

    def wait(self):
        """Seconds until the oldest request in the window leaves it."""
        if self.retry_after is None:
            return None
        return math.ceil(self.retry_after * 1000) / 1000


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
