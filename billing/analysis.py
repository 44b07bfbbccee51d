"""Pricing analysis: what workflows cost per execution and what to charge.

Reads executions and API messages directly, not the rollups, because the
statistics need each execution's cost. The window is half-open: finished
executions whose `finished_at` is at or after `start` and before `end`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from django.db import connection
from django.db.models import (
    Aggregate,
    Avg,
    Count,
    DecimalField,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
)

from agents.models import COST_DIGITS, TOKEN_COUNT_FIELDS, ApiMessage, Execution
from agents.pricing import TokenUsage, price_usage
from billing import plans
from billing.models import Plan

CENT = Decimal("0.01")
MEDIAN = Decimal("0.5")
P95 = Decimal("0.95")


class ExactPercentile(Aggregate):
    """PostgreSQL percentile with linear interpolation, on exact numeric values.

    The result equals `PERCENTILE_CONT(fraction) WITHIN GROUP (ORDER BY x)`,
    but PERCENTILE_CONT only takes double precision, which would round
    costs. This sorts the values into an array and interpolates between the
    two values around position (count - 1) x fraction.
    """

    allow_distinct = False

    def __init__(self, expression, fraction: Decimal, **extra):
        if not Decimal(0) <= fraction <= Decimal(1):
            raise ValueError(f"Invalid fraction {fraction}: expected 0 to 1.")
        values = "(ARRAY_AGG(%(expressions)s ORDER BY %(expressions)s))"
        position = f"((COUNT(%(expressions)s) - 1) * {fraction})"
        lower = f"{values}[FLOOR({position})::integer + 1]"
        upper = f"{values}[CEIL({position})::integer + 1]"
        template = f"({lower} + ({position} - FLOOR({position})) * ({upper} - {lower}))"
        super().__init__(
            expression,
            template=template,
            output_field=DecimalField(**COST_DIGITS),
            **extra,
        )


def percentile(values: Iterable[Decimal], fraction: Decimal) -> Decimal | None:
    """Return the linearly interpolated percentile of `values`, or None when empty.

    The same definition as PERCENTILE_CONT, in exact Decimal arithmetic.
    """
    ordered = sorted(values)
    if not ordered:
        return None
    position = (len(ordered) - 1) * fraction
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (position - lower) * (ordered[upper] - ordered[lower])


# Statistics ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WorkflowCostStats:
    """Cost statistics of one workflow and requested model over a window.

    `executions`, `customers` and `turns_mean` count every finished
    execution. The cost figures leave out the `unpriced_executions`, whose
    cost is unknown, so they are None when every execution is unpriced.
    """

    workflow_slug: str
    model: str
    executions: int
    unpriced_executions: int
    customers: int
    turns_mean: Decimal
    cost_mean: Decimal | None
    cost_median: Decimal | None
    cost_p95: Decimal | None
    total_cost: Decimal

    @property
    def priced_executions(self) -> int:
        return self.executions - self.unpriced_executions


def finished_executions(
    *, start: datetime, end: datetime, workflow: str | None = None
) -> QuerySet:
    """Return the executions that finished in [start, end), of one workflow slug or all."""
    if end <= start:
        raise ValueError(f"The window ends ({end}) at or before it starts ({start}).")
    executions = Execution.objects.filter(
        status__in=Execution.FINISHED_STATUSES,
        finished_at__gte=start,
        finished_at__lt=end,
    )
    if workflow is not None:
        executions = executions.filter(workflow__slug=workflow)
    return executions


def workflow_cost_stats(
    *,
    start: datetime,
    end: datetime,
    workflow: str | None = None,
    model: str | None = None,
) -> list[WorkflowCostStats]:
    """Compute cost statistics per workflow and requested model over [start, end).

    Unpriced executions are counted but left out of every cost figure.
    Rows are ordered by workflow slug, then model.
    """
    executions = finished_executions(start=start, end=end, workflow=workflow)
    if model is not None:
        executions = executions.filter(requested_model=model)
    group = ("workflow__slug", "requested_model")
    counts = (
        executions.order_by()
        .values(*group)
        .annotate(
            executions=Count("pk"),
            unpriced_executions=Count("pk", filter=Q(unpriced=True)),
            customers=Count("customer", distinct=True),
            turns_mean=Avg("num_turns", output_field=DecimalField()),
            total_cost=Sum("cost_usd", filter=Q(unpriced=False)),
        )
        .order_by(*group)
    )
    costs = _cost_statistics(executions.filter(unpriced=False), group)
    stats = []
    for row in counts:
        key = (row["workflow__slug"], row["requested_model"])
        mean, median, p95 = costs.get(key, (None, None, None))
        stats.append(
            WorkflowCostStats(
                workflow_slug=key[0],
                model=key[1],
                executions=row["executions"],
                unpriced_executions=row["unpriced_executions"],
                customers=row["customers"],
                turns_mean=Decimal(row["turns_mean"]),
                cost_mean=mean,
                cost_median=median,
                cost_p95=p95,
                total_cost=row["total_cost"] or Decimal(0),
            )
        )
    return stats


def _cost_statistics(executions: QuerySet, group: tuple[str, str]) -> dict:
    """Return (mean, median, 95th percentile) of cost_usd per group key."""
    if connection.vendor == "postgresql":
        rows = (
            executions.order_by()
            .values(*group)
            .annotate(
                mean=Avg("cost_usd"),
                median=ExactPercentile("cost_usd", MEDIAN),
                p95=ExactPercentile("cost_usd", P95),
            )
        )
        return {
            (row[group[0]], row[group[1]]): (row["mean"], row["median"], row["p95"])
            for row in rows
        }
    # Other databases have no ordered aggregate, so sort in Python.
    values: dict[tuple, list[Decimal]] = {}
    rows = executions.order_by().values_list(*group, "cost_usd")
    for slug, model, cost in rows.iterator():
        values.setdefault((slug, model), []).append(cost)
    return {
        key: (
            sum(costs, Decimal(0)) / len(costs),
            percentile(costs, MEDIAN),
            percentile(costs, P95),
        )
        for key, costs in values.items()
    }


# Prices ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Price:
    """A price in USD: `exact` as computed, `display` rounded half-up to cents."""

    exact: Decimal

    @property
    def display(self) -> Decimal:
        return self.exact.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclasses.dataclass(frozen=True)
class HybridPrice:
    """A base fee that covers `included_executions`, plus a price per extra one."""

    included_executions: int
    base: Price
    overage: Price


@dataclasses.dataclass(frozen=True)
class SuccessFeeCheck:
    """Success fee on one execution, set against that execution's cost."""

    fee: Decimal
    cost: Decimal
    profit: Decimal


def check_target_margin(target_margin: Decimal) -> Decimal:
    """Return `target_margin` as a Decimal, or raise ValueError unless 0 <= m < 1."""
    margin = Decimal(target_margin)
    if not Decimal(0) <= margin < Decimal(1):
        raise ValueError(
            f"Invalid target margin {target_margin}: expected a fraction at least 0 "
            "and below 1, for example 0.7 for 70%."
        )
    return margin


def price_for_margin(cost: Decimal, target_margin: Decimal) -> Price:
    """Return the price that leaves `target_margin` of it after `cost`."""
    return Price(cost / (1 - check_target_margin(target_margin)))


def subscription_price(*, monthly_cost: Decimal, target_margin: Decimal) -> Price:
    """Return the monthly subscription that covers `monthly_cost` at the margin."""
    return price_for_margin(monthly_cost, target_margin)


def per_execution_price(
    *, cost_per_execution: Decimal, target_margin: Decimal
) -> Price:
    """Return the price of one execution that covers its cost at the margin."""
    return price_for_margin(cost_per_execution, target_margin)


def hybrid_price(
    *,
    included_executions: int,
    cost_per_execution: Decimal,
    target_margin: Decimal,
) -> HybridPrice:
    """Return a base fee for `included_executions` and an overage price per execution."""
    if included_executions < 0:
        raise ValueError(
            f"Invalid number of included executions {included_executions}: "
            "expected 0 or more."
        )
    overage = per_execution_price(
        cost_per_execution=cost_per_execution, target_margin=target_margin
    )
    return HybridPrice(
        included_executions=included_executions,
        base=Price(included_executions * overage.exact),
        overage=overage,
    )


def success_fee_check(
    *, commission: Decimal, outcome_value: Decimal, cost_per_execution: Decimal
) -> SuccessFeeCheck:
    """Return the fee of `commission` on `outcome_value`, less one execution's cost."""
    if not Decimal(0) <= commission <= Decimal(1):
        raise ValueError(
            f"Invalid commission {commission}: expected a fraction from 0 to 1, "
            "for example 0.02 for 2%."
        )
    fee = commission * outcome_value
    return SuccessFeeCheck(
        fee=fee, cost=cost_per_execution, profit=fee - cost_per_execution
    )


# What-if ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RepricingEstimate:
    """Recorded messages priced as recorded and as if `model` had produced them.

    An estimate only: another model would have used different token
    counts. Each cost covers only the messages priced that way, and
    `difference` (hypothetical minus actual) is None unless both are
    complete.
    """

    model: str
    messages: int
    actual_cost: Decimal
    actual_unpriced_messages: int
    hypothetical_cost: Decimal
    hypothetical_unpriced_messages: int

    @property
    def difference(self) -> Decimal | None:
        if self.actual_unpriced_messages or self.hypothetical_unpriced_messages:
            return None
        return self.hypothetical_cost - self.actual_cost


def reprice_workflow_on_model(
    *, workflow: str, model: str, start: datetime, end: datetime
) -> RepricingEstimate:
    """Estimate what a workflow's executions in [start, end) would cost on `model`.

    Each API message's recorded token counts are priced with `model`'s
    rates at the time the message arrived.
    """
    executions = finished_executions(start=start, end=end, workflow=workflow)
    rows = (
        ApiMessage.objects.filter(execution__in=executions)
        .order_by()
        .values_list("cost_usd", "arrived_at", *TOKEN_COUNT_FIELDS)
    )
    messages = actual_unpriced = hypothetical_unpriced = 0
    actual = hypothetical = Decimal(0)
    for cost, arrived_at, *counts in rows.iterator():
        messages += 1
        if cost is None:
            actual_unpriced += 1
        else:
            actual += cost
        usage = TokenUsage(**dict(zip(TOKEN_COUNT_FIELDS, counts, strict=True)))
        quote = price_usage(model, usage, arrived_at)
        if quote.cost_usd is None:
            hypothetical_unpriced += 1
        else:
            hypothetical += quote.cost_usd
    return RepricingEstimate(
        model=model,
        messages=messages,
        actual_cost=actual,
        actual_unpriced_messages=actual_unpriced,
        hypothetical_cost=hypothetical,
        hypothetical_unpriced_messages=hypothetical_unpriced,
    )


@dataclasses.dataclass(frozen=True)
class CapSavings:
    """Cost of the messages that a lower max-turns cap would have cut off.

    `cost` leaves out the `unpriced_messages` among them.
    """

    cap: int
    executions: int
    messages: int
    cost: Decimal
    unpriced_messages: int


def max_turns_cap_savings(
    *, workflow: str, cap: int, start: datetime, end: datetime
) -> CapSavings:
    """Sum the cost of messages after each execution's `cap`-th top-level message.

    Top-level messages are those of the main agent, not of a subagent.
    Every message after the cap-th one by sequence counts, subagent
    messages included. Executions with `cap` top-level messages or fewer
    save nothing.
    """
    if cap < 1:
        raise ValueError(f"Invalid cap {cap}: expected 1 or more turns.")
    executions = finished_executions(start=start, end=end, workflow=workflow)
    cap_sequence = (
        ApiMessage.objects.filter(
            execution=OuterRef("execution"), parent_tool_use_id=""
        )
        .order_by("sequence")
        .values("sequence")[cap - 1 : cap]
    )
    cut = (
        ApiMessage.objects.filter(execution__in=executions)
        .annotate(cap_sequence=Subquery(cap_sequence))
        .filter(sequence__gt=F("cap_sequence"))
    )
    totals = cut.aggregate(
        executions=Count("execution", distinct=True),
        messages=Count("pk"),
        cost=Sum("cost_usd"),
        unpriced_messages=Count("pk", filter=Q(cost_usd__isnull=True)),
    )
    return CapSavings(
        cap=cap,
        executions=totals["executions"],
        messages=totals["messages"],
        cost=totals["cost"] or Decimal(0),
        unpriced_messages=totals["unpriced_messages"],
    )


# Days in the month that suggested subscription prices are scaled to.
MONTH_DAYS = 30


def suggested_price_row(stats, margin: Decimal, days: int) -> dict:
    """Return one workflow and model's figures and suggested prices, as strings."""
    per_execution = subscription = None
    if stats.cost_mean is not None:
        per_execution = per_execution_price(
            cost_per_execution=stats.cost_mean, target_margin=margin
        ).display
        monthly_cost = stats.total_cost * MONTH_DAYS / days / stats.customers
        subscription = subscription_price(
            monthly_cost=monthly_cost, target_margin=margin
        ).display
    return {
        "workflow": stats.workflow_slug,
        "model": stats.model,
        "executions": stats.executions,
        "unpriced": stats.unpriced_executions,
        "customers": stats.customers,
        "turns_mean": rounded_text(stats.turns_mean, "0.1"),
        "cost_mean": rounded_text(stats.cost_mean),
        "cost_median": rounded_text(stats.cost_median),
        "cost_p95": rounded_text(stats.cost_p95),
        "total_cost": rounded_text(stats.total_cost),
        "price_per_execution": rounded_text(per_execution, "0.01"),
        "subscription_per_month": rounded_text(subscription, "0.01"),
    }


def rounded_text(value: Decimal | None, places: str = "0.000001") -> str | None:
    """Return `value` rounded half-up to `places` as text, or None."""
    if value is None:
        return None
    return str(value.quantize(Decimal(places), rounding=ROUND_HALF_UP))


@dataclasses.dataclass(frozen=True)
class PlanEarnings:
    """A plan's charge set against a workflow's cost, per execution or per month.

    `basis` names the figure compared: the plan's price per execution,
    its overage price, its monthly price against a customer's monthly
    cost, and so on. `revenue` is None where the plan's charge depends on
    something the cost statistics do not have (outcome values).
    """

    basis: str
    revenue: Decimal | None
    cost: Decimal | None

    @property
    def margin_percent(self) -> Decimal | None:
        if self.revenue is None or self.cost is None or not self.revenue:
            return None
        return ((self.revenue - self.cost) * 100 / self.revenue).quantize(
            Decimal("0.1"), rounding=ROUND_HALF_UP
        )


def plan_earnings(plan, stats: WorkflowCostStats, days: int) -> PlanEarnings:
    """Compare what `plan` charges with the mean cost in `stats` over a window of `days`."""
    cost = stats.cost_mean
    model = plan.billing_model
    if model == Plan.BillingModel.SUBSCRIPTION:
        monthly_cost = None
        if cost is not None and stats.customers:
            monthly_cost = stats.total_cost * MONTH_DAYS / days / stats.customers
        return PlanEarnings(
            "monthly price against one customer's monthly cost",
            plan.monthly_price,
            monthly_cost,
        )
    if model == Plan.BillingModel.USAGE:
        if plan.usage_pricing == Plan.UsagePricing.COST_PLUS:
            revenue = None if cost is None else cost * plan.cost_markup
            return PlanEarnings("token cost times the markup", revenue, cost)
        return PlanEarnings("price per execution", plan.price_per_execution, cost)
    if model == Plan.BillingModel.HYBRID:
        if plan.overage_tiers:
            first_tier = plans.parse_tiers(plan.overage_tiers)[0]
            return PlanEarnings(
                "first overage tier per execution", first_tier.unit_price, cost
            )
        return PlanEarnings("overage price per execution", plan.overage_price, cost)
    if plan.success_fee_kind == Plan.SuccessFeeKind.FIXED_FEE:
        return PlanEarnings("fee per successful outcome", plan.fee_per_success, cost)
    return PlanEarnings(
        "commission on outcome values (not in the cost data)", None, cost
    )
