"""Reads for the reconciliation with Anthropic: our recorded usage of a day."""

from __future__ import annotations

import dataclasses
from datetime import date
from decimal import Decimal

from django.db.models import Count, Q, Sum

from agents.models import ApiMessage
from agents.pricing.engine import family_id
from billing.anthropic.report import day_bounds


@dataclasses.dataclass
class RecordedUsage:
    """Our recorded usage of one customer and model family on one UTC day."""

    cost_usd: Decimal = Decimal(0)
    prompt_tokens: int = 0
    output_tokens: int = 0
    unpriced_messages: int = 0


def recorded_usage(day: date) -> dict[tuple[int, str], RecordedUsage]:
    """Return our usage of the UTC `day` by customer id and model family.

    Messages count on the day they arrived. Runs against the local
    simulator are left out, since Anthropic never saw them.
    """
    start, end = day_bounds(day)
    rows = (
        ApiMessage.objects.filter(
            arrived_at__gte=start, arrived_at__lt=end, execution__simulated=False
        )
        .values("execution__customer_id", "model")
        .order_by()
        .annotate(
            cost=Sum("cost_usd"),
            unpriced=Count("pk", filter=Q(cost_usd__isnull=True)),
            input=Sum("input_tokens"),
            write_5m=Sum("cache_write_5m_tokens"),
            write_1h=Sum("cache_write_1h_tokens"),
            read=Sum("cache_read_tokens"),
            output=Sum("output_tokens"),
        )
    )
    usage: dict[tuple[int, str], RecordedUsage] = {}
    for row in rows:
        key = (row["execution__customer_id"], family_id(row["model"]))
        total = usage.setdefault(key, RecordedUsage())
        total.cost_usd += row["cost"] or Decimal(0)
        total.unpriced_messages += row["unpriced"]
        total.prompt_tokens += (
            row["input"] + row["write_5m"] + row["write_1h"] + row["read"]
        )
        total.output_tokens += row["output"]
    return usage
