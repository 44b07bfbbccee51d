"""Read one UTC day of Anthropic's usage and cost reports through the SDK.

`client.beta.organization.analytics.cost.list` and `.usage.list` return one
row per combination of the `group_by[]` dimensions, over as many pages as
needed. Iterating the SDK's page cursor fetches every page. Cost amounts
are decimal strings in cents.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation

import anthropic

from agents.pricing.engine import family_id

logger = logging.getLogger(__name__)

GROUP_BY = ["model", "api_key_id", "workspace_id"]
# The API's maximum page size.
PAGE_SIZE = 1000
CENTS_PER_DOLLAR = Decimal(100)


class ReportError(Exception):
    """Anthropic's report could not be read; nothing was stored."""


@dataclasses.dataclass
class ReportRow:
    """Anthropic's figures of one model on one API key or workspace."""

    model: str
    api_key_id: str
    workspace_id: str
    cost_usd: Decimal = Decimal(0)
    list_cost_usd: Decimal = Decimal(0)
    prompt_tokens: int = 0
    output_tokens: int = 0


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """Return the start of `day` in UTC and the start of the next day."""
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


def day_report(client: anthropic.Anthropic, day: date) -> list[ReportRow]:
    """Return Anthropic's cost and usage of `day` by model, API key and workspace.

    Model ids are reduced to their family, as ours are. Raise ReportError
    when a request fails or a row has an amount that is not USD.
    """
    start, end = day_bounds(day)
    analytics = client.beta.organization.analytics
    query = {
        "starting_at": start,
        "ending_at": end,
        "group_by": GROUP_BY,
        "limit": PAGE_SIZE,
    }
    rows: dict[tuple[str, str, str], ReportRow] = {}
    try:
        for item in analytics.cost.list(**query):
            row = _row(rows, item.group)
            row.cost_usd += _dollars(item.cost.amount, item.cost.currency, day)
            row.list_cost_usd += _dollars(
                item.cost.list_amount, item.cost.currency, day
            )
        for item in analytics.usage.list(**query):
            row = _row(rows, item.group)
            usage = item.usage
            row.prompt_tokens += (
                usage.uncached_input_tokens
                + usage.cache_creation.ephemeral_5m_input_tokens
                + usage.cache_creation.ephemeral_1h_input_tokens
                + usage.cache_read_input_tokens
            )
            row.output_tokens += usage.output_tokens
    except anthropic.APIError as exc:
        logger.warning("Anthropic report of %s could not be read: %s", day, exc)
        raise ReportError(
            f"Reading Anthropic's usage and cost report of {day} failed: {exc}. "
            "Check ANTHROPIC_ADMIN_API_KEY and try again."
        ) from exc
    return list(rows.values())


def _row(rows: dict, group) -> ReportRow:
    key = (
        family_id(group.model) if group.model else "",
        group.api_key_id or "",
        group.workspace_id or "",
    )
    row = rows.get(key)
    if row is None:
        row = rows[key] = ReportRow(*key)
    return row


def _dollars(amount: str, currency: str, day: date) -> Decimal:
    if currency != "USD":
        raise ReportError(
            f"Anthropic's cost report of {day} has an amount in {currency}; "
            "only USD is supported."
        )
    try:
        return Decimal(amount) / CENTS_PER_DOLLAR
    except InvalidOperation as exc:
        raise ReportError(
            f"Anthropic's cost report of {day} has an invalid amount {amount!r}."
        ) from exc
