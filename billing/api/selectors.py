"""Reads of the billing endpoints: a customer's usage and charges, and invoices."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.db.models import Count, Q

from agents.models import Execution
from billing.invoicing import _subscription_of, included_executions, invoice_preview
from billing.margins import (
    customer_period,
    elapsed_fraction,
    fixed_amount,
    run_rate_projection,
)
from billing.models import PeriodStatement, Plan, StripeInvoice
from billing.plans import plan_on
from billing.rollups import next_month_start
from customers.models import Customer

ZERO = Decimal(0)
CENT = Decimal("0.01")

# Execution counts reported per status, by field name.
STATUS_COUNTS = {
    "succeeded": Execution.Status.SUCCEEDED,
    "failed": Execution.Status.FAILED,
    "interrupted": Execution.Status.INTERRUPTED,
    "max_turns": Execution.Status.MAX_TURNS,
    "budget_exceeded": Execution.Status.BUDGET_EXCEEDED,
    "queued": Execution.Status.QUEUED,
    "running": Execution.Status.RUNNING,
}


@dataclasses.dataclass(frozen=True)
class CustomerUsage:
    """A customer's executions and charges in one billing period.

    `included_executions` is None unless a hybrid plan bills the period.
    `projected_total` extends the usage-driven charges to the period end
    at the run rate so far; it is an estimate, and None before the period
    starts.
    """

    period_start: date
    period_end: date
    closed: bool
    currency: str
    plan: Plan | None
    executions: dict[str, int]
    billed_executions: int
    included_executions: int | None
    overage_executions: int
    lines: list[dict]
    total: Decimal
    projected_total: Decimal | None


def period_starting_in(customer: Customer, month: date) -> tuple[date, date]:
    """Return the customer's billing period that starts in the month of `month`.

    Periods run monthly from the subscription's start day, so the period
    containing the month's last day starts in that month. A customer
    without a subscription then has calendar months.
    """
    last_day = next_month_start(month) - timedelta(days=1)
    return customer_period(customer, last_day)


def customer_usage(
    customer: Customer, *, period: tuple[date, date], now: datetime
) -> CustomerUsage:
    """Return the customer's executions and charges in `period`.

    Charges are those of the period's statement once it is closed, else
    of the invoice preview. Raises ValueError when the period is not a
    billing period of the customer's subscription.
    """
    period_start, period_end = period
    counts = _status_counts(customer, period_start, period_end)
    statement = PeriodStatement.objects.filter(
        customer=customer, period_start=period_start, period_end=period_end
    ).first()
    subscription = _subscription_of(customer, period_start, period_end)
    if statement is not None:
        lines = statement.lines
        currency = statement.currency
    else:
        preview = invoice_preview(
            customer=customer, period_start=period_start, period_end=period_end
        )
        lines = [line.as_json() for line in preview.lines]
        currency = preview.currency
    included = None
    plan = None
    if subscription is not None:
        plan = plan_on(subscription, period_end - timedelta(days=1))
        included = included_executions(subscription, period_start, period_end)
    total = sum((Decimal(line["amount"]) for line in lines), ZERO)
    projected = run_rate_projection(
        total,
        fixed_amount(lines),
        elapsed_fraction(period_start, period_end, now),
    )
    if projected is not None:
        projected = projected.quantize(CENT, rounding=ROUND_HALF_UP)
    overage = sum(
        (Decimal(line["quantity"]) for line in lines if line["kind"] == "overage"),
        ZERO,
    )
    return CustomerUsage(
        period_start=period_start,
        period_end=period_end,
        closed=statement is not None,
        currency=currency,
        plan=plan,
        executions=counts,
        billed_executions=counts["succeeded"],
        included_executions=included,
        overage_executions=int(overage),
        lines=lines,
        total=total,
        projected_total=projected,
    )


def _status_counts(customer: Customer, start: date, end: date) -> dict[str, int]:
    """Count the customer's executions created in [start, end), in total and by status."""
    aggregates = {
        name: Count("pk", filter=Q(status=value))
        for name, value in STATUS_COUNTS.items()
    }
    return Execution.objects.filter(
        customer=customer,
        created_at__gte=datetime.combine(start, time.min, tzinfo=UTC),
        created_at__lt=datetime.combine(end, time.min, tzinfo=UTC),
    ).aggregate(total=Count("pk"), **aggregates)


def customer_statements(customer: Customer):
    """Return the customer's closed period statements; the caller orders and pages them."""
    return PeriodStatement.objects.filter(customer=customer)


def stripe_invoices_by_period(
    customer: Customer, statements: list[PeriodStatement]
) -> dict[tuple[date, date], StripeInvoice]:
    """Return the customer's mirrored Stripe invoices matching the statements' periods.

    NOTE: no field links a Stripe invoice to a statement, so they are
    matched by their periods' UTC dates. An invoice whose period Stripe
    reports differently is not shown.
    """
    starts = {statement.period_start for statement in statements}
    if not starts:
        return {}
    invoices = StripeInvoice.objects.filter(
        customer=customer, period_start__date__in=starts
    ).order_by("stripe_created")
    found = {}
    for invoice in invoices:
        if invoice.period_start is None or invoice.period_end is None:
            continue
        key = (
            invoice.period_start.astimezone(UTC).date(),
            invoice.period_end.astimezone(UTC).date(),
        )
        found[key] = invoice  # the latest created wins
    return found
