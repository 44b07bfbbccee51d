"""The one place that builds a StripeClient from the settings.

Tests and local tools swap the HTTP client or the base addresses with
`client_override`, so nothing else needs to know where Stripe is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator

import stripe
from django.conf import settings

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ClientOverride:
    """The API key, HTTP client and base addresses that `client_override` sets."""

    api_key: str
    http_client: stripe.HTTPClient | None = None
    base_addresses: dict[str, str] | None = None


_override: ClientOverride | None = None


class StripeNotConfigured(Exception):
    """Raised by `stripe_client` when STRIPE_API_KEY is empty."""


def stripe_enabled() -> bool:
    """Return whether Stripe calls are configured (an API key or a test override)."""
    return _override is not None or bool(settings.STRIPE_API_KEY)


def stripe_client() -> stripe.StripeClient:
    """Build a StripeClient from the settings, or from the active override.

    The client never retries on its own (`max_network_retries=0`): our
    callers retry 429, 5xx and connection errors with backoff, so each
    retry is counted once. Raises StripeNotConfigured without an API key.
    """
    if _override is not None:
        return stripe.StripeClient(
            api_key=_override.api_key,
            http_client=_override.http_client,
            base_addresses=_override.base_addresses or {},
            max_network_retries=0,
        )
    api_key = settings.STRIPE_API_KEY
    if not api_key:
        raise StripeNotConfigured(
            "STRIPE_API_KEY is empty; set it to bill through Stripe."
        )
    base_addresses = {}
    if settings.STRIPE_API_BASE:
        base_addresses["api"] = settings.STRIPE_API_BASE
    if settings.STRIPE_METER_EVENTS_API_BASE:
        base_addresses["meter_events"] = settings.STRIPE_METER_EVENTS_API_BASE
    return stripe.StripeClient(
        api_key=api_key,
        base_addresses=base_addresses,
        max_network_retries=0,
    )


@contextlib.contextmanager
def client_override(
    *,
    api_key: str,
    http_client: stripe.HTTPClient | None = None,
    base_addresses: dict[str, str] | None = None,
) -> Iterator[None]:
    """Make `stripe_client` build clients with these values inside the block."""
    global _override
    previous = _override
    _override = ClientOverride(api_key, http_client, base_addresses)
    try:
        yield
    finally:
        _override = previous


def log_disabled(action: str) -> None:
    """Log that `action` did nothing because Stripe is not configured."""
    logger.info("Stripe is off (STRIPE_API_KEY is empty): skipped %s", action)
