"""Reads of the billing app.

Usage figures come from the rollup tables, never from raw API messages.
A period is a half-open range of UTC dates, `start` included and `end`
excluded. The whole calendar months inside it are read from MonthlyUsage
and the days before and after them from DailyUsage. The figures are as
fresh as the last rollup run (see `usage_rolled_up_until`).
"""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.db import models
from django.db.models import Q, Sum

from agents.models import Workflow
from billing.models import (
    DailyUsage,
    MonthlyUsage,
    PeriodRevenue,
    PeriodStatement,
    RollupCheckpoint,
)
from billing.rollups import (
    CHECKPOINT_NAME,
    USAGE_FIELDS,
    month_start,
    next_month_start,
)
from customers.models import Customer

ALIAS = "total_"


@dataclasses.dataclass(frozen=True)
class Usage:
    """Usage totals over some rollup rows.

    `cost_usd` is the cost of the priced messages only. While
    `unpriced_messages` is above zero the whole cost is unknown, so show
    it as incomplete rather than as a total.
    """

    cost_usd: Decimal = Decimal(0)
    unpriced_messages: int = 0
    api_messages: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0
    web_search_requests: int = 0
    executions: int = 0
    succeeded: int = 0
    failed: int = 0
    interrupted: int = 0
    max_turns_reached: int = 0
    budget_exceeded: int = 0

    @property
    def cost_complete(self) -> bool:
        """Whether `cost_usd` is the whole cost, with no unpriced message."""
        return self.unpriced_messages == 0

    @property
    def finished(self) -> int:
        """Executions that reached a final status."""
        return (
            self.succeeded
            + self.failed
            + self.interrupted
            + self.max_turns_reached
            + self.budget_exceeded
        )

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            **{
                name: getattr(self, name) + getattr(other, name)
                for name in USAGE_FIELDS
            }
        )

    @classmethod
    def from_sums(cls, row: dict) -> Usage:
        """Build from a row of sums aliased `total_<field>`, reading NULL as zero."""
        values = {name: row[f"{ALIAS}{name}"] or 0 for name in USAGE_FIELDS}
        values["cost_usd"] = Decimal(values["cost_usd"])
        return cls(**values)


def usage_totals(*, start: date, end: date, customer: Customer | None = None) -> Usage:
    """Return the usage of the period, of one customer or of all."""
    return _grouped_usage(start=start, end=end, customer=customer, group=None).get(
        None, Usage()
    )


def usage_by_customer(*, start: date, end: date) -> dict[Customer, Usage]:
    """Return the usage of the period per customer, highest cost first."""
    usage = _grouped_usage(start=start, end=end, customer=None, group="customer_id")
    customers = Customer.objects.in_bulk(usage.keys())
    return _by_cost({customers[pk]: totals for pk, totals in usage.items()})


def usage_by_workflow(
    *, start: date, end: date, customer: Customer | None = None
) -> dict[Workflow, Usage]:
    """Return the usage of the period per workflow, highest cost first."""
    usage = _grouped_usage(start=start, end=end, customer=customer, group="workflow_id")
    workflows = Workflow.objects.in_bulk(usage.keys())
    return _by_cost({workflows[pk]: totals for pk, totals in usage.items()})


def usage_by_model(
    *, start: date, end: date, customer: Customer | None = None
) -> dict[str, Usage]:
    """Return the usage of the period per model id, highest cost first.

    Tokens and cost are those of the model that produced the messages. Execution counts
    are those of the model the executions requested.
    """
    usage = _grouped_usage(start=start, end=end, customer=customer, group="model")
    return _by_cost(usage)


def usage_by_day(
    *, start: date, end: date, customer: Customer | None = None
) -> dict[date, Usage]:
    """Return the usage of each day of the period that has any, in date order."""
    rows = _filter_customer(DailyUsage.objects, customer).filter(
        day__gte=start, day__lt=end
    )
    return dict(sorted(_sum_rows(rows, "day").items()))


def usage_by_month(
    *, start: date, end: date, customer: Customer | None = None
) -> dict[date, Usage]:
    """Return the usage of each month that starts in the period, in date order.

    Months are keyed by their first day. Pass month starts as `start` and
    `end`, because a month is counted whole whenever its first day is in
    the period.
    """
    rows = _filter_customer(MonthlyUsage.objects, customer).filter(
        month__gte=start, month__lt=end
    )
    return dict(sorted(_sum_rows(rows, "month").items()))


def usage_rolled_up_until() -> datetime | None:
    """Return the start of the last completed rollup run, or None before the first.

    Raw rows changed before this moment are in the rollups.
    """
    checkpoint = RollupCheckpoint.objects.filter(name=CHECKPOINT_NAME).first()
    return checkpoint.high_water_mark if checkpoint else None


def _grouped_usage(
    *, start: date, end: date, customer: Customer | None, group: str | None
) -> dict:
    """Return the usage of the period by the values of `group`, or under None."""
    if end < start:
        raise ValueError(f"The period ends ({end}) before it starts ({start}).")
    whole_months_start = start if start.day == 1 else next_month_start(start)
    whole_months_end = month_start(end)
    daily = _filter_customer(DailyUsage.objects, customer)
    if whole_months_start >= whole_months_end:
        # No whole month: every day comes from the daily rows.
        return _sum_rows(daily.filter(day__gte=start, day__lt=end), group)

    monthly = _filter_customer(MonthlyUsage.objects, customer).filter(
        month__gte=whole_months_start, month__lt=whole_months_end
    )
    daily = daily.filter(
        Q(day__gte=start, day__lt=whole_months_start)
        | Q(day__gte=whole_months_end, day__lt=end)
    )
    usage = _sum_rows(monthly, group)
    for key, totals in _sum_rows(daily, group).items():
        usage[key] = usage.get(key, Usage()) + totals
    return usage


def _filter_customer(
    manager: models.Manager, customer: Customer | None
) -> models.QuerySet:
    rows = manager.all()
    return rows if customer is None else rows.filter(customer=customer)


def _sum_rows(rows: models.QuerySet, group: str | None) -> dict:
    sums = {f"{ALIAS}{name}": Sum(name) for name in USAGE_FIELDS}
    if group is None:
        row = rows.aggregate(**sums)
        if row[f"{ALIAS}api_messages"] is None:
            return {}
        return {None: Usage.from_sums(row)}
    grouped = rows.order_by().values(group).annotate(**sums)
    return {row[group]: Usage.from_sums(row) for row in grouped}


def _by_cost(usage: dict) -> dict:
    return dict(sorted(usage.items(), key=lambda item: item[1].cost_usd, reverse=True))


def daily_cost_by(
    *, customer: Customer, start: date, end: date, group: str
) -> tuple[list[date], dict[str, list[Decimal]]]:
    """Return the days of the period and the customer's cost on each, per `group`.

    `group` is "model" (the model that produced the messages) or
    "workflow" (keyed by slug). Each series has one value per day, 0 on
    days without usage, and the series come in order of their total cost,
    highest first.
    """
    keys = {"model": "model", "workflow": "workflow__slug"}
    if group not in keys:
        raise ValueError(f"Invalid group {group!r}: expected 'model' or 'workflow'.")
    if end < start:
        raise ValueError(f"The period ends ({end}) before it starts ({start}).")
    key = keys[group]
    days = [start + timedelta(days=offset) for offset in range((end - start).days)]
    position = {day: index for index, day in enumerate(days)}
    rows = (
        DailyUsage.objects.filter(customer=customer, day__gte=start, day__lt=end)
        .order_by()
        .values("day", key)
        .annotate(cost=Sum("cost_usd"))
    )
    series: dict[str, list[Decimal]] = {}
    for row in rows:
        values = series.setdefault(row[key], [Decimal(0)] * len(days))
        values[position[row["day"]]] += row["cost"]
    ranked = sorted(series.items(), key=lambda item: (-sum(item[1]), item[0]))
    return days, dict(ranked)


def monthly_trend(*, months: list[date]) -> list[dict]:
    """Return revenue and cost for each month in `months` (first days), in order.

    Cost is the rolled-up cost of the calendar month. Revenue is that of
    the billing periods starting in the month: the closed statements, and
    for periods not closed yet the stored current revenue (see
    `billing.revenue`). With subscriptions not anchored on the 1st, the
    two cover slightly different days.
    """
    if not months:
        return []
    first, end = months[0], next_month_start(months[-1])
    costs = dict(
        MonthlyUsage.objects.filter(month__gte=first, month__lt=end)
        .order_by()
        .values("month")
        .annotate(total=Sum("cost_usd"))
        .values_list("month", "total")
    )
    revenue = {month: Decimal(0) for month in months}
    closed = set()
    statements = PeriodStatement.objects.filter(
        period_start__gte=first, period_start__lt=end
    ).values_list("customer_id", "period_start", "revenue_total")
    for customer_id, period_start, total in statements:
        revenue[month_start(period_start)] += total
        closed.add((customer_id, period_start))
    stored = PeriodRevenue.objects.filter(
        period_start__gte=first, period_start__lt=end
    ).values_list("customer_id", "period_start", "revenue")
    for customer_id, period_start, total in stored:
        if (customer_id, period_start) not in closed:
            revenue[month_start(period_start)] += total
    return [
        {
            "month": month,
            "revenue": revenue[month],
            "cost": costs.get(month) or Decimal(0),
            "margin": revenue[month] - (costs.get(month) or Decimal(0)),
        }
        for month in months
    ]
