"""Reads behind the customer portal's pages.

Every figure here is what the customer is charged or used: invoice lines,
executions, tokens and statuses. Our token cost and margin never leave
this module, because customers must not see them.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, F, Q, QuerySet
from django.shortcuts import get_object_or_404
from django.utils import timezone

from agents.models import ApiMessage, Execution, Workflow
from billing import plans
from billing.budgets import budget_status
from billing.invoicing import InvoiceLine, included_executions, invoice_preview
from billing.margins import (
    customer_period,
    elapsed_fraction,
    fixed_amount,
    run_rate_projection,
)
from billing.models import PeriodStatement, Plan, StripeInvoice, Subscription
from billing.selectors import (
    Usage,
    usage_by_day,
    usage_by_workflow,
    usage_rolled_up_until,
)
from billing.stripe.money import from_minor_units
from customers.models import ApiKey, Customer, Invitation, Membership

ZERO = Decimal(0)
# A budget bar turns to a warning at this share of the limit.
BUDGET_WARNING_PERCENT = 80


def membership_for_user(user: AbstractBaseUser) -> Membership | None:
    """Return the user's membership with its customer, or None for a non-member."""
    if not user.is_authenticated:
        return None
    return (
        Membership.objects.select_related("customer", "user").filter(user=user).first()
    )


def open_subscription(customer: Customer) -> Subscription | None:
    """Return the customer's subscription that is not canceled, if any."""
    return (
        Subscription.objects.filter(customer=customer)
        .exclude(status=Subscription.Status.CANCELED)
        .select_related("plan")
        .first()
    )


def plans_for_signup() -> QuerySet[Plan]:
    return Plan.objects.filter(is_active=True).order_by("name")


def plan_summary(plan: Plan) -> str:
    """Describe in one line what the plan charges, for the sign-up form."""
    currency = plan.currency.upper()

    def money(amount: Decimal) -> str:
        return f"{amount.normalize():f} {currency}"

    if plan.billing_model == Plan.BillingModel.SUBSCRIPTION:
        return f"{money(plan.monthly_price)} a month"
    if plan.billing_model == Plan.BillingModel.USAGE:
        if plan.usage_pricing == Plan.UsagePricing.PER_EXECUTION:
            return f"{money(plan.price_per_execution)} per succeeded execution"
        return "Pay for the tokens your succeeded executions use"
    if plan.billing_model == Plan.BillingModel.SUCCESS_FEE:
        if plan.success_fee_kind == Plan.SuccessFeeKind.COMMISSION:
            summary = (
                f"{plan.commission_percent.normalize():f}% of each outcome's value"
            )
        else:
            summary = f"{money(plan.fee_per_success)} per successful outcome"
        if plan.minimum_monthly_fee:
            summary += f", at least {money(plan.minimum_monthly_fee)} a month"
        return summary
    overage = (
        "then tiered prices"
        if plan.overage_tiers
        else f"then {money(plan.overage_price)} each"
    )
    return (
        f"{money(plan.monthly_price)} a month with {plan.included_executions} "
        f"executions included, {overage}"
    )


def workflows_allowed(customer: Customer) -> QuerySet[Workflow]:
    """Return the workflows the customer may start from the portal.

    NOTE: plans do not list workflows yet, so every active workflow is
    allowed on every plan.
    """
    return Workflow.objects.filter(is_active=True).order_by("name")


def members_of(customer: Customer) -> QuerySet[Membership]:
    return customer.memberships.select_related("user").order_by("created_at")


def invitations_pending(customer: Customer) -> QuerySet[Invitation]:
    """Return the customer's invitations not yet accepted, withdrawn or expired."""
    return Invitation.objects.filter(
        customer=customer,
        accepted_at__isnull=True,
        revoked_at__isnull=True,
        expires_at__gt=timezone.now(),
    ).order_by("-created_at")


def api_keys_of(customer: Customer) -> QuerySet[ApiKey]:
    """Return the customer's API keys, active ones first, newest first."""
    return ApiKey.objects.filter(customer=customer).order_by(
        F("revoked_at").desc(nulls_first=True), "-created_at"
    )


# Executions --------------------------------------------------------------


def executions_of(
    customer: Customer,
    *,
    status: str = "",
    workflow: Workflow | None = None,
    created_from: date | None = None,
    created_to: date | None = None,
) -> QuerySet[Execution]:
    """Return the customer's executions, newest first, narrowed by the filters.

    `created_to` is inclusive: executions created on that UTC day match.
    """
    executions = Execution.objects.filter(customer=customer).select_related("workflow")
    if status:
        executions = executions.filter(status=status)
    if workflow is not None:
        executions = executions.filter(workflow=workflow)
    if created_from is not None:
        executions = executions.filter(created_at__date__gte=created_from)
    if created_to is not None:
        executions = executions.filter(created_at__date__lte=created_to)
    return executions.order_by("-created_at", "-pk")


# Explanations of each status for customers. The raw error text stays with
# staff, because it can name workers, budgets and amounts.
STATUS_EXPLANATIONS = {
    Execution.Status.QUEUED: "Waiting for a free worker. It starts on its own.",
    Execution.Status.RUNNING: (
        "The agent is working; its API messages appear below as they arrive."
    ),
    Execution.Status.SUCCEEDED: "Finished with a result. Succeeded executions are billed.",
    Execution.Status.FAILED: "Ended with an error. Not billed.",
    Execution.Status.INTERRUPTED: (
        "Stopped before it finished, for example by a time limit. Not billed."
    ),
    Execution.Status.MAX_TURNS: (
        "Stopped at the workflow's turn limit before a result. Not billed."
    ),
    Execution.Status.BUDGET_EXCEEDED: (
        "Stopped or rejected by a spending limit. Not billed."
    ),
}


def execution_of(customer: Customer, execution_id: int) -> Execution:
    """Return the customer's execution, or raise Http404 for another customer's."""
    return get_object_or_404(
        Execution.objects.select_related("workflow"),
        pk=execution_id,
        customer=customer,
    )


def execution_messages(execution: Execution) -> QuerySet[ApiMessage]:
    """Return the execution's API messages in arrival order, without their cost."""
    return (
        ApiMessage.objects.filter(execution=execution)
        .annotate(
            cache_write_tokens=F("cache_write_5m_tokens") + F("cache_write_1h_tokens")
        )
        .order_by("sequence")
        .only(
            "message_id",
            "sequence",
            "model",
            "parent_tool_use_id",
            "input_tokens",
            "output_tokens",
            "cache_write_5m_tokens",
            "cache_write_1h_tokens",
            "cache_read_tokens",
            "estimated",
        )
    )


# Dashboard ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ChargeShare:
    """The charges so far allocated to one workflow or day, with its executions."""

    label: str
    succeeded: int
    executions: int
    amount: Decimal


@dataclasses.dataclass(frozen=True)
class BudgetBar:
    """How much of the customer's monthly spending limit is used, in percent only."""

    percent_used: int

    @property
    def width_percent(self) -> int:
        return min(self.percent_used, 100)

    @property
    def level(self) -> str:
        if self.percent_used >= 100:
            return "over"
        if self.percent_used >= BUDGET_WARNING_PERCENT:
            return "warning"
        return "ok"


@dataclasses.dataclass(frozen=True)
class PeriodOverview:
    """The current billing period, as shown to the customer.

    `executions_included` is None on plans without included executions.
    `projected_total` is None on the period's first instant. Figures from
    the usage rollups (the two allocations) are as fresh as `rolled_up_at`.
    """

    plan: Plan | None
    period_start: date
    period_end: date
    currency: str
    lines: tuple[InvoiceLine, ...]
    total_so_far: Decimal
    projected_total: Decimal | None
    executions_succeeded: int
    executions_started: int
    executions_included: int | None
    overage_executions: int
    overage_amount: Decimal
    by_workflow: list[ChargeShare]
    by_day: list[ChargeShare]
    budget: BudgetBar | None
    rolled_up_at: datetime | None

    @property
    def included_percent(self) -> int | None:
        if not self.executions_included:
            return None
        return min(100, self.executions_succeeded * 100 // self.executions_included)


def period_overview(
    customer: Customer, *, now: datetime | None = None
) -> PeriodOverview:
    """Build the customer's current period: invoice lines so far, usage and budget."""
    now = now or timezone.now()
    today = now.astimezone(UTC).date()
    start, end = customer_period(customer, today)
    subscription = open_subscription(customer)
    plan = plans.plan_on(subscription, today) if subscription else None

    lines, currency, projected, included = (), "usd", None, None
    total = ZERO
    if subscription is not None and subscription.started_on <= today:
        preview = invoice_preview(customer=customer, period_start=start, period_end=end)
        lines, currency, total = preview.lines, preview.currency, preview.total
        projected = run_rate_projection(
            total,
            fixed_amount(line.as_json() for line in lines),
            elapsed_fraction(start, end, now),
        )
        included = included_executions(subscription, start, end)
    overage = [line for line in lines if line.kind == "overage"]
    counts = _period_execution_counts(customer, start, end)

    by_workflow = usage_by_workflow(start=start, end=end, customer=customer)
    by_day = usage_by_day(start=start, end=end, customer=customer)
    return PeriodOverview(
        plan=plan,
        period_start=start,
        period_end=end,
        currency=currency,
        lines=tuple(lines),
        total_so_far=total,
        projected_total=_cents(projected) if projected is not None else None,
        executions_succeeded=counts["succeeded"],
        executions_started=counts["started"],
        executions_included=included,
        overage_executions=int(sum((line.quantity for line in overage), ZERO)),
        overage_amount=sum((line.amount for line in overage), ZERO),
        by_workflow=_allocate(
            {workflow.name: usage for workflow, usage in by_workflow.items()}, total
        ),
        by_day=_allocate(
            {day.isoformat(): usage for day, usage in by_day.items()}, total
        ),
        budget=_budget_bar(customer, now),
        rolled_up_at=usage_rolled_up_until(),
    )


def _period_execution_counts(customer: Customer, start: date, end: date) -> dict:
    executions = Execution.objects.filter(
        customer=customer,
        created_at__date__gte=start,
        created_at__date__lt=end,
    )
    return executions.aggregate(
        started=Count("id"),
        succeeded=Count("id", filter=Q(status=Execution.Status.SUCCEEDED)),
    )


def _allocate(usage: dict[str, Usage], total: Decimal) -> list[ChargeShare]:
    """Split `total` over the keys by their share of succeeded executions.

    Only succeeded executions are billed, so a key whose runs all failed
    gets no share. Staff margin pages allocate revenue the same way, by
    executions (billing.margins). The shares are rounded to cents, so
    they may miss the total by a few cents.
    """
    succeeded = sum(row.succeeded for row in usage.values())
    shares = []
    for key, row in usage.items():
        amount = total * row.succeeded / succeeded if succeeded else ZERO
        shares.append(ChargeShare(key, row.succeeded, row.executions, _cents(amount)))
    return shares


def _budget_bar(customer: Customer, now: datetime) -> BudgetBar | None:
    """Return the share of the hard budget used, or None without a hard budget.

    The budget is set on our token cost, so only the percentage is shown.
    """
    status = budget_status(customer, now=now)
    limit = status.limits.hard_usd
    if limit is None or limit <= 0:
        return None
    return BudgetBar(percent_used=int(status.spent_usd * 100 / limit))


def _cents(amount: Decimal) -> Decimal:
    return plans.round_line(amount)


# Invoices ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StatementView:
    """A closed period's invoice lines and total, without cost or margin."""

    period_start: date
    period_end: date
    currency: str
    lines: list[dict]
    total: Decimal


@dataclasses.dataclass(frozen=True)
class HostedInvoice:
    """A Stripe invoice mirrored from webhooks, with its link on Stripe."""

    number: str
    status: str
    currency: str
    total: Decimal
    amount_due: Decimal
    period_start: datetime | None
    period_end: datetime | None
    hosted_invoice_url: str


def statements_of(customer: Customer) -> list[StatementView]:
    """Return the customer's closed period statements, newest first."""
    statements = PeriodStatement.objects.filter(customer=customer).order_by(
        "-period_start"
    )
    return [
        StatementView(
            period_start=statement.period_start,
            period_end=statement.period_end,
            currency=statement.currency,
            lines=[
                {
                    "description": line["description"],
                    "quantity": Decimal(line["quantity"]),
                    "unit_amount": Decimal(line["unit_amount"]),
                    "amount": Decimal(line["amount"]),
                }
                for line in statement.lines
            ],
            total=statement.revenue_total,
        )
        for statement in statements.only(
            "period_start", "period_end", "currency", "lines", "revenue_total"
        )
    ]


def stripe_invoices_of(customer: Customer) -> list[HostedInvoice]:
    """Return the customer's Stripe invoices that are not drafts, newest first."""
    invoices = StripeInvoice.objects.filter(customer=customer).exclude(status="draft")
    return [
        HostedInvoice(
            number=invoice.number or invoice.stripe_id,
            status=invoice.status,
            currency=invoice.currency or "usd",
            total=from_minor_units(invoice.total, invoice.currency or "usd"),
            amount_due=from_minor_units(invoice.amount_due, invoice.currency or "usd"),
            period_start=invoice.period_start,
            period_end=invoice.period_end,
            hosted_invoice_url=invoice.hosted_invoice_url,
        )
        for invoice in invoices.order_by("-stripe_created", "-pk")
    ]
