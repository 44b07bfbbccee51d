"""Customer budgets: the limits, the spend against them and the reservations.

A customer's hard budget is its own `monthly_budget_usd`, or else the
`default_monthly_budget_usd` of the plan its open subscription is on. The
budget covers one billing period (see `billing.margins.customer_period`).
Spend in a period is the recorded cost of the customer's executions
created in it, read from the executions themselves rather than the
rollups, which lag by minutes.

Before an execution starts, its worst-case cost (the workflow's per-run
budget, or AGENTMARGIN_DEFAULT_RUN_RESERVATION_USD) is reserved against
the budget under the customer's row lock, which `agents.admission` takes.
While the reservation is held the execution counts at the larger of its
reservation and its recorded cost. When the execution finishes the
reservation is released and its recorded cost alone counts.

NOTE: the runner stops a run only after recording the response that took
it past its limit, so a customer's spend can end above the hard budget
by up to one response per run going at the time.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Case, DecimalField, F, Q, Sum, Value, When
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from agents.admission import Rejection
from agents.models import Execution
from billing.margins import customer_period
from billing.models import BudgetReservation, Subscription
from billing.plans import plan_on
from customers.models import Customer

logger = logging.getLogger(__name__)

ZERO = Decimal(0)
COST_FIELD = DecimalField(max_digits=24, decimal_places=14)


@dataclasses.dataclass(frozen=True)
class BudgetLimits:
    """A customer's budgets for one billing period in USD, each None when not set.

    `hard_source` is "customer" or "plan": where the hard budget comes from.
    """

    hard_usd: Decimal | None
    soft_usd: Decimal | None
    hard_source: str = ""


@dataclasses.dataclass(frozen=True)
class BudgetStatus:
    """Spend against a customer's budgets in the billing period containing a day."""

    limits: BudgetLimits
    period_start: date
    period_end: date
    spent_usd: Decimal

    @property
    def remaining_usd(self) -> Decimal | None:
        if self.limits.hard_usd is None:
            return None
        return self.limits.hard_usd - self.spent_usd


def customer_budget(customer: Customer, day: date) -> BudgetLimits:
    """Return the customer's hard and soft budgets in effect on `day`."""
    soft = customer.monthly_soft_budget_usd
    if customer.monthly_budget_usd is not None:
        return BudgetLimits(customer.monthly_budget_usd, soft, "customer")
    subscription = (
        Subscription.objects.filter(customer=customer, started_on__lte=day)
        .exclude(status=Subscription.Status.CANCELED)
        .select_related("plan")
        .first()
    )
    if subscription is not None:
        default = plan_on(subscription, day).default_monthly_budget_usd
        if default is not None:
            return BudgetLimits(default, soft, "plan")
    return BudgetLimits(None, soft)


def period_spend(
    *,
    customer_id: int,
    start: date,
    end: date,
    exclude_execution_id: int | None = None,
) -> Decimal:
    """Return the spend counted against the budget of the period [start, end).

    That is the recorded cost of the customer's executions created in the
    period, each with a held reservation counted at no less than it.
    """
    executions = Execution.objects.filter(
        customer_id=customer_id,
        created_at__gte=utc_midnight(start),
        created_at__lt=utc_midnight(end),
    )
    if exclude_execution_id is not None:
        executions = executions.exclude(pk=exclude_execution_id)
    reserved = Q(
        budget_reservation__isnull=False,
        budget_reservation__released_at__isnull=True,
    )
    counted = Case(
        When(reserved, then=Greatest("cost_usd", "budget_reservation__amount_usd")),
        default=F("cost_usd"),
        output_field=COST_FIELD,
    )
    total = executions.aggregate(
        spend=Coalesce(Sum(counted), Value(ZERO), output_field=COST_FIELD)
    )["spend"]
    return Decimal(total)


def budget_status(customer: Customer, *, now: datetime | None = None) -> BudgetStatus:
    """Return the customer's budgets and spend in the period containing `now`."""
    today = utc_date(now or timezone.now())
    start, end = customer_period(customer, today)
    return BudgetStatus(
        limits=customer_budget(customer, today),
        period_start=start,
        period_end=end,
        spent_usd=period_spend(customer_id=customer.pk, start=start, end=end),
    )


def budget_used_text(spent: Decimal, budget: Decimal) -> str:
    """Return the share of `budget` that `spent` uses, as a whole percent."""
    if budget <= 0:
        return "wholly"
    percent = (spent * 100 / budget).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return f"{percent}%"


def reservation_amount(execution: Execution) -> Decimal:
    """Return the worst-case cost of `execution`: its per-run budget, or the default."""
    per_run = execution.workflow.per_run_budget_usd
    if per_run is not None:
        return per_run
    return settings.AGENTMARGIN_DEFAULT_RUN_RESERVATION_USD


def reservation_admit(execution: Execution) -> Rejection | None:
    """Reserve the worst-case cost of `execution`, or reject it if that would overshoot.

    An admission check (see `agents.admission`): it runs under the
    customer's row lock, so the spend it reads cannot change before the
    reservation is written. A customer without a hard budget is never
    rejected and reserves nothing. Admitting an execution that already has
    a reservation does nothing.
    """
    if BudgetReservation.objects.filter(execution_id=execution.pk).exists():
        return None
    # Read again under the lock: staff may have just changed the budget.
    customer = Customer.objects.get(pk=execution.customer_id)
    today = utc_date(timezone.now())
    budget = customer_budget(customer, today).hard_usd
    if budget is None:
        return None
    start, end = customer_period(customer, today)
    amount = reservation_amount(execution)
    spent = period_spend(
        customer_id=customer.pk,
        start=start,
        end=end,
        exclude_execution_id=execution.pk,
    )
    if spent + amount > budget:
        # The reason reaches customers (API, portal), who never see our
        # cost, so it gives the share used; the amounts go to the log.
        logger.info(
            "Execution %s: rejected, customer %s has used %s of its budget %s "
            "and the run needs up to %s",
            execution.pk,
            customer.slug,
            spent,
            budget,
            amount,
        )
        last_day = end - timedelta(days=1)
        return Rejection(
            reason=(
                f"The monthly budget for {start} to {last_day} is "
                f"{budget_used_text(spent, budget)} used (finished runs plus runs "
                "in progress), and this run could take it over, so it was not "
                "started. Raise the monthly budget or wait for the next period."
            )
        )
    BudgetReservation.objects.create(
        execution_id=execution.pk,
        customer_id=customer.pk,
        amount_usd=amount,
        budget_usd=budget,
        period_start=start,
        period_end=end,
    )
    logger.info(
        "Execution %s: reserved %s of customer %s's budget %s (%s used)",
        execution.pk,
        amount,
        customer.slug,
        budget,
        spent,
    )
    return None


def run_limit(execution: Execution) -> Decimal | None:
    """Return the most `execution` may cost under its customer's budget, or None.

    That is its own reservation, or less when the rest of the period's
    spend has grown since; zero when the budget is already used up.
    """
    reservation = BudgetReservation.objects.filter(
        execution_id=execution.pk, released_at__isnull=True
    ).first()
    if reservation is None:
        return None
    others = period_spend(
        customer_id=reservation.customer_id,
        start=reservation.period_start,
        end=reservation.period_end,
        exclude_execution_id=execution.pk,
    )
    remaining = max(reservation.budget_usd - others, ZERO)
    return min(reservation.amount_usd, remaining)


@transaction.atomic
def reservation_release(execution_id: int) -> BudgetReservation | None:
    """Release the held reservation of a finished execution and note its actual cost.

    Returns the released reservation, or None when there was none held.
    Releasing twice does nothing.
    """
    reservation = (
        BudgetReservation.objects.select_for_update()
        .filter(execution_id=execution_id, released_at__isnull=True)
        .first()
    )
    if reservation is None:
        return None
    cost = (
        Execution.objects.filter(pk=execution_id)
        .values_list("cost_usd", flat=True)
        .first()
    )
    reservation.released_at = timezone.now()
    reservation.actual_cost_usd = cost
    reservation.save(update_fields=["released_at", "actual_cost_usd"])
    logger.info(
        "Execution %s: released reservation of %s; recorded cost %s",
        execution_id,
        reservation.amount_usd,
        cost,
    )
    return reservation


def reservations_release_finished() -> int:
    """Release the reservations still held by finished executions; return how many.

    `execution_finished` normally releases them. This catches the ones
    whose release failed, for example when the process died right after
    the execution was closed.
    """
    held = BudgetReservation.objects.filter(
        released_at__isnull=True,
        execution__status__in=Execution.FINISHED_STATUSES,
    ).values_list("execution_id", flat=True)
    released = 0
    for execution_id in list(held):
        if reservation_release(execution_id) is not None:
            released += 1
    if released:
        logger.warning("Released %d reservations of finished executions", released)
    return released


def usd(amount: Decimal) -> str:
    """Format a USD amount with two to six decimal places, for messages."""
    text = f"{amount.quantize(Decimal('0.000001')):f}"
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"


def utc_midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def utc_date(moment: datetime) -> date:
    return moment.astimezone(UTC).date()
