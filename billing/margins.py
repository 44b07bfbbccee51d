"""Gross margin per customer, workflow and model over a billing period.

Revenue is the customer's invoice preview total for its subscription
period, or the revenue of the PeriodStatement once the period is closed.
Cost is our token cost read from the rollup tables (see
`billing.selectors`), so it is as fresh as the last rollup run. A customer
without a subscription has the calendar month as its period and no
revenue.

Projection to the period end uses the run rate: a figure so far divided
by the elapsed fraction of the period. Cost is projected that way, and so
is the usage-driven part of revenue. Lines that do not follow usage (the
base charge, proration credits and charges, and a success-fee top-up to
the minimum) stay fixed.

Workflow and model revenue is an allocation, not an invoice figure: each
customer's revenue is split over its workflows, or its models, in
proportion to their share of the customer's executions in the period.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import UTC, date, datetime, time
from decimal import ROUND_HALF_UP, Decimal

from billing import plans
from billing.invoicing import invoice_preview
from billing.models import PeriodStatement, Subscription
from billing.rollups import month_start, next_month_start
from billing.selectors import (
    Usage,
    usage_by_model,
    usage_by_workflow,
    usage_totals,
)
from customers.models import Customer

ZERO = Decimal(0)
PERCENT_PLACES = Decimal("0.0001")
# Invoice line kinds whose amount does not grow with usage in the period.
FIXED_LINE_KINDS = frozenset(
    {"base", "proration_credit", "proration_charge", "minimum_fee"}
)


@dataclasses.dataclass(frozen=True)
class CustomerMargin:
    """Revenue, cost and margin of one customer's billing period.

    `elapsed` is the fraction of the period that has passed at `now`,
    from 0 to 1. The projected figures are None while it is 0.
    """

    customer: Customer
    period_start: date
    period_end: date
    currency: str
    closed: bool
    revenue: Decimal
    fixed_revenue: Decimal
    usage: Usage
    elapsed: Decimal

    @property
    def cost(self) -> Decimal:
        return self.usage.cost_usd

    @property
    def margin(self) -> Decimal:
        return self.revenue - self.cost

    @property
    def margin_percent(self) -> Decimal | None:
        return margin_percent(self.margin, self.revenue)

    @property
    def unprofitable(self) -> bool:
        return self.margin < 0

    @property
    def projected_cost(self) -> Decimal | None:
        if not self.elapsed:
            return None
        return self.cost / self.elapsed

    @property
    def projected_revenue(self) -> Decimal | None:
        if not self.elapsed:
            return None
        return run_rate_projection(self.revenue, self.fixed_revenue, self.elapsed)

    @property
    def projected_margin(self) -> Decimal | None:
        if not self.elapsed:
            return None
        return self.projected_revenue - self.projected_cost


@dataclasses.dataclass
class AllocatedMargin:
    """Rollup cost of a workflow or model and the revenue allocated to it."""

    key: str
    cost: Decimal = ZERO
    revenue: Decimal = ZERO
    executions: int = 0
    unpriced_messages: int = 0

    @property
    def margin(self) -> Decimal:
        return self.revenue - self.cost

    @property
    def margin_percent(self) -> Decimal | None:
        return margin_percent(self.margin, self.revenue)

    @property
    def unprofitable(self) -> bool:
        return self.margin < 0


@dataclasses.dataclass(frozen=True)
class MarginReport:
    """Margins of every customer with a subscription or usage, and their allocations."""

    customers: list[CustomerMargin]
    workflows: list[AllocatedMargin]
    models: list[AllocatedMargin]


def margin_percent(margin: Decimal, revenue: Decimal) -> Decimal | None:
    """Return margin as a percent of revenue to 4 places, or None when revenue is 0."""
    if not revenue:
        return None
    return (margin * 100 / revenue).quantize(PERCENT_PLACES, rounding=ROUND_HALF_UP)


def fixed_amount(lines: Iterable[dict]) -> Decimal:
    """Return the total of the invoice lines (as JSON) that do not grow with usage."""
    return sum(
        (Decimal(line["amount"]) for line in lines if line["kind"] in FIXED_LINE_KINDS),
        ZERO,
    )


def run_rate_projection(
    total: Decimal, fixed: Decimal, elapsed: Decimal
) -> Decimal | None:
    """Project a period's total to its end: the fixed part as is, the rest by run rate.

    Returns None while no time of the period has passed (`elapsed` is 0).
    """
    if not elapsed:
        return None
    # NOTE: an estimate. Hybrid overage starts only above the included
    # executions and a minimum fee tops up low fees, so neither scales
    # linearly with the run rate.
    return fixed + (total - fixed) / elapsed


def customer_period(customer: Customer, day: date) -> tuple[date, date]:
    """Return the customer's billing period containing `day`.

    That is the period of the subscription open on `day`, else the
    calendar month.
    """
    subscription = _subscription_on(customer, day)
    if subscription is None:
        return month_start(day), next_month_start(day)
    return plans.period_containing(subscription.started_on, day)


def customer_margin(*, customer: Customer, day: date, now: datetime) -> CustomerMargin:
    """Compute the margin of the customer's billing period containing `day`."""
    period_start, period_end = customer_period(customer, day)
    usage = usage_totals(start=period_start, end=period_end, customer=customer)
    statement = PeriodStatement.objects.filter(
        customer=customer, period_start=period_start, period_end=period_end
    ).first()
    if statement is not None:
        revenue = statement.revenue_total
        currency = statement.currency
        fixed = fixed_amount(statement.lines)
    else:
        preview = invoice_preview(
            customer=customer, period_start=period_start, period_end=period_end
        )
        revenue = preview.total
        currency = preview.currency
        fixed = fixed_amount(line.as_json() for line in preview.lines)
    return CustomerMargin(
        customer=customer,
        period_start=period_start,
        period_end=period_end,
        currency=currency,
        closed=statement is not None,
        revenue=revenue,
        fixed_revenue=fixed,
        usage=usage,
        elapsed=elapsed_fraction(period_start, period_end, now),
    )


def elapsed_fraction(period_start: date, period_end: date, now: datetime) -> Decimal:
    """Return the fraction of [period_start, period_end) in UTC before `now`, 0 to 1."""
    start = datetime.combine(period_start, time.min, tzinfo=UTC)
    end = datetime.combine(period_end, time.min, tzinfo=UTC)
    if now <= start:
        return ZERO
    if now >= end:
        return Decimal(1)
    elapsed = now - start
    length = end - start
    # Whole microseconds, so the fraction is exact Decimal arithmetic.
    return Decimal(_microseconds(elapsed)) / Decimal(_microseconds(length))


def margin_report(*, day: date, now: datetime) -> MarginReport:
    """Compute the margins of the billing periods containing `day`.

    Customers appear when they have a subscription started on or before
    `day` or any rollup usage in their period. They are ordered by margin,
    lowest first.
    """
    customers = []
    workflows: dict[str, AllocatedMargin] = {}
    models: dict[str, AllocatedMargin] = {}
    for customer in Customer.objects.order_by("slug"):
        figures = customer_margin(customer=customer, day=day, now=now)
        has_subscription = _subscription_on(customer, day) is not None
        has_usage = figures.usage.api_messages or figures.usage.executions
        if not has_subscription and not has_usage:
            continue
        customers.append(figures)
        period = {"start": figures.period_start, "end": figures.period_end}
        by_workflow = usage_by_workflow(customer=customer, **period)
        _allocate(
            workflows,
            {workflow.slug: usage for workflow, usage in by_workflow.items()},
            figures,
        )
        _allocate(models, usage_by_model(customer=customer, **period), figures)
    customers.sort(key=lambda row: (row.margin, row.customer.slug))
    return MarginReport(
        customers=customers,
        workflows=sorted(workflows.values(), key=lambda row: row.key),
        models=sorted(models.values(), key=lambda row: row.key),
    )


def _allocate(
    totals: dict[str, AllocatedMargin], usage: dict[str, Usage], figures: CustomerMargin
) -> None:
    """Add each key's cost, and its share of the customer's revenue by executions.

    A customer with no execution in the period allocates no revenue, so
    the allocated revenues can add up to less than the customers' total.
    """
    executions = sum(row.executions for row in usage.values())
    for key, row in usage.items():
        target = totals.setdefault(key, AllocatedMargin(key))
        target.cost += row.cost_usd
        target.executions += row.executions
        target.unpriced_messages += row.unpriced_messages
        if executions:
            target.revenue += figures.revenue * row.executions / executions


def _subscription_on(customer: Customer, day: date) -> Subscription | None:
    """Return the customer's open subscription, else its latest, started by `day`."""
    subscriptions = Subscription.objects.filter(customer=customer, started_on__lte=day)
    open_subscription = subscriptions.exclude(
        status=Subscription.Status.CANCELED
    ).first()
    return open_subscription or subscriptions.order_by("-started_on", "-id").first()


def _microseconds(delta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
