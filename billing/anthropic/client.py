"""The one place that builds the Anthropic client of the reconciliation.

It reads ANTHROPIC_ADMIN_API_KEY and ANTHROPIC_ADMIN_BASE_URL, so tests
point the real `anthropic` client at a local fake by changing the settings.
"""

from __future__ import annotations

import anthropic
from django.conf import settings

# Seconds before one report request is abandoned; the SDK retries twice.
REQUEST_TIMEOUT_SECONDS = 60.0

# Passed explicitly: without a base URL the SDK would take ANTHROPIC_BASE_URL,
# which may point agent runs at the local simulator.
ANTHROPIC_API_URL = "https://api.anthropic.com"


class AnthropicNotConfigured(Exception):
    """ANTHROPIC_ADMIN_API_KEY is empty, so Anthropic's reports cannot be read."""


def anthropic_reports_enabled() -> bool:
    """Return whether an Admin API key is configured."""
    return bool(settings.ANTHROPIC_ADMIN_API_KEY)


def anthropic_admin_client() -> anthropic.Anthropic:
    """Build a client for Anthropic's Admin API from the settings.

    Raise AnthropicNotConfigured when ANTHROPIC_ADMIN_API_KEY is empty.
    """
    api_key = settings.ANTHROPIC_ADMIN_API_KEY
    if not api_key:
        raise AnthropicNotConfigured(
            "ANTHROPIC_ADMIN_API_KEY is empty; set it to an Admin API key "
            "(sk-ant-admin...) to compare costs with Anthropic's reports."
        )
    return anthropic.Anthropic(
        api_key=api_key,
        base_url=settings.ANTHROPIC_ADMIN_BASE_URL or ANTHROPIC_API_URL,
        timeout=REQUEST_TIMEOUT_SECONDS,
    )
