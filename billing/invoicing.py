"""Invoice previews: the lines a customer would be billed for one period.

Counted executions are the customer's executions created in the period
(UTC, start included, end excluded) whose status is `succeeded`. Failed,
interrupted, stopped (max turns, budget exceeded) and unfinished runs are
not billed, though their token cost counts in `cost_usd`. A success fee
counts only succeeded executions that have an outcome value.

Every amount is a Decimal. Each line's amount is rounded half up to cents
exactly once, and the total is the sum of the rounded lines.
"""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.db.models import Count, Q, Sum

from agents.models import Execution
from billing import plans
from billing.models import Plan, Subscription
from customers.models import Customer

ZERO = Decimal(0)


@dataclasses.dataclass(frozen=True)
class InvoiceLine:
    """One invoice line; `amount` is rounded to cents, the other figures are exact."""

    kind: str
    description: str
    quantity: Decimal
    unit_amount: Decimal
    amount: Decimal

    def as_json(self) -> dict:
        """Return the line with its Decimals as strings, for a JSON field."""
        return {
            "kind": self.kind,
            "description": self.description,
            "quantity": str(self.quantity),
            "unit_amount": str(self.unit_amount),
            "amount": str(self.amount),
        }


@dataclasses.dataclass(frozen=True)
class InvoicePreview:
    """The billed lines of a period, their total and our recorded cost."""

    customer: Customer
    period_start: date
    period_end: date
    currency: str
    lines: tuple[InvoiceLine, ...]
    cost_usd: Decimal

    @property
    def total(self) -> Decimal:
        return sum((line.amount for line in self.lines), ZERO)


@dataclasses.dataclass(frozen=True)
class PeriodCounts:
    """SQL aggregates over the customer's executions created in the period."""

    succeeded: int
    succeeded_cost: Decimal
    outcomes: int
    outcome_value: Decimal
    cost: Decimal


def invoice_preview(
    *, customer: Customer, period_start: date, period_end: date
) -> InvoicePreview:
    """Return the invoice lines of one billing period of the customer's subscription.

    Raises ValueError unless the period is one of the subscription's
    monthly periods. The base charge uses the plan in effect on the
    period's first day. Usage, overage and success fees use the plan in
    effect on the day of each execution: a prorated change splits the
    period into segments (`usage_segments`), each billed on its own plan.
    A customer with no subscription, or whose subscription ended before
    the period or started after its first day, gets no line.
    """
    if period_end <= period_start:
        raise ValueError(
            f"The period ends ({period_end}) on or before it starts ({period_start})."
        )
    total_counts = _period_counts(customer, period_start, period_end)
    subscription = _subscription_of(customer, period_start, period_end)
    if subscription is None:
        return InvoicePreview(
            customer, period_start, period_end, "usd", (), total_counts.cost
        )
    expected = plans.period_containing(subscription.started_on, period_start)
    if (period_start, period_end) != expected:
        raise ValueError(
            f"{period_start} to {period_end} is not a billing period of subscription "
            f"{subscription.pk}; the period containing {period_start} is "
            f"{expected[0]} to {expected[1]}."
        )
    base_plan = plans.plan_on(subscription, period_start)
    lines = _base_lines(base_plan)
    lines += _proration_lines(subscription, period_start, period_end)
    segments = usage_segments(subscription, period_start, period_end)
    for segment in segments:
        counts = _period_counts(customer, segment.start, segment.usage_end)
        lines += _usage_lines(segment, counts, labelled=len(segments) > 1)
    return InvoicePreview(
        customer,
        period_start,
        period_end,
        segments[-1].plan.currency,
        tuple(lines),
        total_counts.cost,
    )


@dataclasses.dataclass(frozen=True)
class UsageSegment:
    """Days of a period billed for usage on one plan.

    A period has one segment, unless a prorated plan change splits it at
    the change's day. `share` is the segment's days over the period's,
    and a success-fee plan's minimum monthly fee is prorated by it.
    `included` is the segment's part of its hybrid plan's included
    executions (see `split_included`). Executions are counted from
    `start` to `usage_end`, which is `end` unless the subscription ended
    earlier.
    """

    plan: Plan
    start: date
    end: date
    usage_end: date
    share: Decimal
    included: int = 0

    @property
    def label(self) -> str:
        last_day = self.end - timedelta(days=1)
        return f"{self.plan.name}, {self.start} to {last_day}"


def usage_segments(
    subscription: Subscription, period_start: date, period_end: date
) -> list[UsageSegment]:
    """Split the period at each prorated plan change made in it."""
    change_days = sorted(
        set(
            subscription.changes.filter(
                prorate=True,
                effective_on__gt=period_start,
                effective_on__lt=period_end,
            ).values_list("effective_on", flat=True)
        )
    )
    period_days = Decimal((period_end - period_start).days)
    # Executions from the day the subscription ended on are not billed.
    usage_stop = period_end
    if subscription.ended_on is not None:
        usage_stop = max(period_start, min(period_end, subscription.ended_on))
    bounds = [period_start, *change_days, period_end]
    segments = [
        UsageSegment(
            plan=plans.plan_on(subscription, start),
            start=start,
            end=end,
            usage_end=max(start, min(end, usage_stop)),
            share=Decimal((end - start).days) / period_days,
        )
        for start, end in itertools.pairwise(bounds)
    ]
    exact = [
        (segment.plan.included_executions or 0) * segment.share for segment in segments
    ]
    return [
        dataclasses.replace(segment, included=included)
        for segment, included in zip(segments, split_included(exact), strict=True)
    ]


def included_executions(
    subscription: Subscription, period_start: date, period_end: date
) -> int | None:
    """Return the executions the period includes, prorated over its plans.

    None when no part of the period is on a hybrid plan.
    """
    hybrid = [
        segment
        for segment in usage_segments(subscription, period_start, period_end)
        if segment.plan.billing_model == Plan.BillingModel.HYBRID
    ]
    if not hybrid:
        return None
    return sum(segment.included for segment in hybrid)


def _subscription_of(
    customer: Customer, period_start: date, period_end: date
) -> Subscription | None:
    """Return the customer's subscription billed in the period, if any.

    The candidates started before `period_end` and had not ended by
    `period_start`. The one whose billing periods include this one wins: a
    customer who canceled and subscribed again has one of each. Otherwise
    it is the open one, else the latest, of those started by `period_start`.
    """
    subscriptions = (
        Subscription.objects.filter(customer=customer, started_on__lt=period_end)
        .exclude(ended_on__lte=period_start)
        .select_related("plan")
    )
    for subscription in subscriptions.order_by("-started_on", "-id"):
        if subscription.started_on <= period_start and plans.period_containing(
            subscription.started_on, period_start
        ) == (period_start, period_end):
            return subscription
    # A subscription that starts inside the period bills from its own
    # start, in its own periods, so it has nothing to bill here.
    started = subscriptions.filter(started_on__lte=period_start)
    open_subscription = started.exclude(status=Subscription.Status.CANCELED).first()
    return open_subscription or started.order_by("-started_on", "-id").first()


def _period_counts(
    customer: Customer, period_start: date, period_end: date
) -> PeriodCounts:
    succeeded = Q(status=Execution.Status.SUCCEEDED)
    with_outcome = succeeded & Q(outcome_value_usd__isnull=False)
    row = Execution.objects.filter(
        customer=customer,
        created_at__gte=_utc_midnight(period_start),
        created_at__lt=_utc_midnight(period_end),
    ).aggregate(
        succeeded=Count("id", filter=succeeded),
        succeeded_cost=Sum("cost_usd", filter=succeeded),
        outcomes=Count("id", filter=with_outcome),
        outcome_value=Sum("outcome_value_usd", filter=with_outcome),
        cost=Sum("cost_usd"),
    )
    return PeriodCounts(
        succeeded=row["succeeded"],
        succeeded_cost=row["succeeded_cost"] or ZERO,
        outcomes=row["outcomes"],
        outcome_value=row["outcome_value"] or ZERO,
        cost=row["cost"] or ZERO,
    )


def _utc_midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _line(kind: str, description: str, quantity, unit_amount: Decimal) -> InvoiceLine:
    quantity = Decimal(quantity)
    return InvoiceLine(
        kind,
        description,
        quantity,
        unit_amount,
        plans.round_line(quantity * unit_amount),
    )


def _base_lines(plan: Plan) -> list[InvoiceLine]:
    if plan.monthly_price is None:
        return []
    return [_line("base", f"{plan.name}: monthly price", 1, plan.monthly_price)]


def _proration_lines(
    subscription: Subscription, period_start: date, period_end: date
) -> list[InvoiceLine]:
    """Return the credit and charge of each prorated change made in the period."""
    lines = []
    changes = subscription.changes.filter(
        prorate=True, effective_on__gte=period_start, effective_on__lt=period_end
    ).select_related("from_plan", "to_plan")
    for change in changes.order_by("effective_on", "id"):
        days = f"{change.remaining_days} of {(change.period_end - change.period_start).days} days"
        lines.append(
            InvoiceLine(
                "proration_credit",
                f"Unused time on {change.from_plan.name} ({days})",
                Decimal(1),
                change.proration_credit,
                change.proration_credit,
            )
        )
        lines.append(
            InvoiceLine(
                "proration_charge",
                f"Remaining time on {change.to_plan.name} ({days})",
                Decimal(1),
                change.proration_charge,
                change.proration_charge,
            )
        )
    return lines


def _usage_lines(
    segment: UsageSegment, counts: PeriodCounts, *, labelled: bool
) -> list[InvoiceLine]:
    plan = segment.plan
    if plan.billing_model == Plan.BillingModel.USAGE:
        lines = _usage_based_lines(plan, counts)
    elif plan.billing_model == Plan.BillingModel.SUCCESS_FEE:
        lines = _success_fee_lines(plan, counts, segment.share)
    elif plan.billing_model == Plan.BillingModel.HYBRID:
        lines = _hybrid_lines(plan, counts, segment.share, segment.included)
    else:
        lines = []
    if not labelled:
        return lines
    return [
        dataclasses.replace(line, description=f"{segment.label}: {line.description}")
        for line in lines
    ]


def _usage_based_lines(plan: Plan, counts: PeriodCounts) -> list[InvoiceLine]:
    if plan.usage_pricing == Plan.UsagePricing.COST_PLUS:
        description = (
            f"Token cost of {counts.succeeded} succeeded executions "
            f"times {plan.cost_markup}"
        )
        return [_line("usage", description, counts.succeeded_cost, plan.cost_markup)]
    if counts.succeeded == 0:
        return []
    return [
        _line(
            "usage",
            "Succeeded executions",
            counts.succeeded,
            plan.price_per_execution,
        )
    ]


def _success_fee_lines(
    plan: Plan, counts: PeriodCounts, share: Decimal
) -> list[InvoiceLine]:
    lines = []
    if plan.success_fee_kind == Plan.SuccessFeeKind.COMMISSION:
        if counts.outcomes:
            rate = plan.commission_percent / 100
            description = (
                f"{plan.commission_percent}% commission on the outcome value "
                f"of {counts.outcomes} succeeded executions"
            )
            lines.append(_line("success_fee", description, counts.outcome_value, rate))
    elif counts.outcomes:
        lines.append(
            _line(
                "success_fee",
                "Fee per successful outcome",
                counts.outcomes,
                plan.fee_per_success,
            )
        )
    fees = sum((line.amount for line in lines), ZERO)
    if plan.minimum_monthly_fee is None:
        return lines
    minimum = plans.round_line(plan.minimum_monthly_fee * share)
    if fees < minimum:
        description = f"Top-up to the minimum monthly fee of {minimum}"
        if share != 1:
            description += f" (prorated from {plan.minimum_monthly_fee})"
        lines.append(_line("minimum_fee", description, 1, minimum - fees))
    return lines


def split_included(exact: list[Decimal]) -> list[int]:
    """Return whole included executions for each segment's exact prorated share.

    The parts add up to the exact total rounded half up, so a period split
    in two never includes more executions than it would whole. Each part
    is rounded down first. The executions left then go to the parts with
    the largest fractions, the earlier part first on a tie.
    """
    total = int(sum(exact, ZERO).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    parts = [int(value) for value in exact]
    by_fraction = sorted(
        range(len(exact)), key=lambda index: (-(exact[index] - parts[index]), index)
    )
    for index in by_fraction[: max(0, total - sum(parts))]:
        parts[index] += 1
    return parts


def _hybrid_lines(
    plan: Plan, counts: PeriodCounts, share: Decimal, included: int
) -> list[InvoiceLine]:
    lines = [
        _line(
            "executions",
            f"Succeeded executions ({included} included)",
            counts.succeeded,
            ZERO,
        )
    ]
    overage = max(0, counts.succeeded - included)
    if overage == 0:
        return lines
    if not plan.overage_tiers:
        lines.append(
            _line(
                "overage",
                "Executions above the included ones",
                overage,
                plan.overage_price,
            )
        )
        return lines
    lower = 0
    for tier, units in plans.split_into_tiers(
        overage, plans.parse_tiers(plan.overage_tiers)
    ):
        upper = "and above" if tier.up_to is None else f"to {tier.up_to}"
        description = f"Executions above the included ones, {lower + 1} {upper}"
        lines.append(_line("overage", description, units, tier.unit_price))
        lower += units
    return lines
