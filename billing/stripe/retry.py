"""Our own retry loop for Stripe requests: backoff with jitter on 429, 5xx and
connection errors.

The client is built with `max_network_retries=0`, so this loop is the
only one and each attempt is counted once. Callers pass an idempotency
key, so a retried create that Stripe had already done returns the first
result instead of doing it twice.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

import stripe
from django.conf import settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Tests replace this with a function that records the delays.
sleep: Callable[[float], None] = time.sleep


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait between attempts, in seconds."""

    max_retries: int
    base_seconds: float
    max_seconds: float

    @classmethod
    def from_settings(cls) -> RetryPolicy:
        return cls(
            max_retries=settings.STRIPE_MAX_RETRIES,
            base_seconds=settings.STRIPE_RETRY_BASE_SECONDS,
            max_seconds=settings.STRIPE_RETRY_MAX_SECONDS,
        )

    def delay(self, retry: int) -> float:
        """Return the wait before retry number `retry` (from 1): full jitter."""
        ceiling = min(self.max_seconds, self.base_seconds * 2 ** (retry - 1))
        return random.uniform(ceiling / 2, ceiling)


def is_retryable(error: stripe.StripeError) -> bool:
    """Return whether `error` is worth retrying: a 429, a 5xx or no response at all."""
    if isinstance(error, stripe.RateLimitError | stripe.APIConnectionError):
        return True
    status = error.http_status
    return status is not None and status >= 500


def call_with_retries(
    action: Callable[[], T],
    *,
    description: str,
    policy: RetryPolicy | None = None,
    on_attempt: Callable[[], None] | None = None,
) -> T:
    """Run `action` until it succeeds, retrying transient Stripe errors.

    A 429 waits at least as long as its Retry-After header requests. Errors
    that are not transient, and the last transient one, are raised.
    `on_attempt` is called before each attempt, to count them.
    """
    policy = policy or RetryPolicy.from_settings()
    retry = 0
    while True:
        if on_attempt is not None:
            on_attempt()
        try:
            return action()
        except stripe.StripeError as error:
            if not is_retryable(error) or retry >= policy.max_retries:
                raise
            retry += 1
            wait = max(policy.delay(retry), _retry_after(error))
            logger.warning(
                "%s: Stripe request failed with %s (%s); retry %s of %s in %.2f s",
                description,
                error.http_status or "no response",
                type(error).__name__,
                retry,
                policy.max_retries,
                wait,
            )
            sleep(wait)


def _retry_after(error: stripe.StripeError) -> float:
    headers = error.headers or {}
    value = headers.get("Retry-After") or headers.get("retry-after")
    try:
        return min(float(value), 60.0) if value else 0.0
    except ValueError:
        return 0.0
