"""Stored revenue of each customer's current billing period.

Revenue follows the plan's rules (included executions, graduated tiers,
minimum fees, proration), which live in `billing.invoicing` and not in
SQL. To list customers by margin in SQL, the invoice preview total of
each customer's current period is stored in `PeriodRevenue`, and
`customers_with_margin` sets it beside the rolled-up cost of the same
days. The roll-up job refreshes the rows right after it refreshes the
cost, so both are as fresh as the last roll-up run. Subscription changes
and recorded outcomes refresh their customer's row at once.
"""

from __future__ import annotations

import logging
from datetime import UTC, date

from django.db.models import (
    Case,
    DateField,
    DecimalField,
    ExpressionWrapper,
    F,
    OuterRef,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce, Round
from django.utils import timezone

from billing.invoicing import invoice_preview
from billing.margins import customer_period
from billing.models import (
    COST_DIGITS,
    MONEY_DIGITS,
    DailyUsage,
    PeriodRevenue,
    PeriodStatement,
    Subscription,
)
from billing.rollups import month_start, next_month_start
from customers.models import Customer

logger = logging.getLogger(__name__)


def period_revenue_refresh(
    *, today: date | None = None, customers: QuerySet[Customer] | list | None = None
) -> int:
    """Store the revenue of the billing period containing `today` for each customer.

    Covers `customers`, or every customer with a subscription started by
    `today`. A closed period stores its statement's revenue, an open one
    its invoice preview total. Returns how many rows were written.
    """
    today = today or timezone.now().astimezone(UTC).date()
    if customers is None:
        customer_ids = Subscription.objects.filter(started_on__lte=today).values(
            "customer_id"
        )
        customers = Customer.objects.filter(pk__in=customer_ids).order_by("pk")
    written = 0
    for customer in customers:
        period_start, period_end = customer_period(customer, today)
        statement = PeriodStatement.objects.filter(
            customer=customer, period_start=period_start, period_end=period_end
        ).first()
        if statement is not None:
            revenue, currency = statement.revenue_total, statement.currency
        else:
            preview = invoice_preview(
                customer=customer, period_start=period_start, period_end=period_end
            )
            revenue, currency = preview.total, preview.currency
        PeriodRevenue.objects.update_or_create(
            customer=customer,
            period_start=period_start,
            defaults={
                "period_end": period_end,
                "revenue": revenue,
                "currency": currency,
                "computed_at": timezone.now(),
            },
        )
        written += 1
    if written:
        logger.info("Stored the period revenue of %s customers for %s", written, today)
    return written


def customers_with_margin(
    queryset: QuerySet[Customer], *, today: date | None = None
) -> QuerySet[Customer]:
    """Annotate each customer with its current period's revenue, cost and margin.

    Adds `period_start`, `period_end`, `period_revenue` (0 when never
    computed), `revenue_computed_at`, `period_cost` (rolled-up cost of
    the same days), `period_margin` and `period_margin_percent` (None when
    revenue is 0), all in SQL. A customer without a stored period gets the
    calendar month and no revenue.
    """
    today = today or timezone.now().astimezone(UTC).date()
    stored = PeriodRevenue.objects.filter(
        customer=OuterRef("pk"), period_start__lte=today, period_end__gt=today
    ).order_by("-period_start")
    money = DecimalField(**MONEY_DIGITS)
    cost = DecimalField(**COST_DIGITS)
    costs = (
        DailyUsage.objects.filter(
            customer=OuterRef("pk"),
            day__gte=OuterRef("period_start"),
            day__lt=OuterRef("period_end"),
        )
        .order_by()
        .values("customer")
        .annotate(total=Sum("cost_usd"))
        .values("total")
    )
    return queryset.annotate(
        period_start=Coalesce(
            Subquery(stored.values("period_start")[:1]),
            Value(month_start(today)),
            output_field=DateField(),
        ),
        period_end=Coalesce(
            Subquery(stored.values("period_end")[:1]),
            Value(next_month_start(today)),
            output_field=DateField(),
        ),
        period_revenue=Coalesce(
            Subquery(stored.values("revenue")[:1]), Value(0), output_field=money
        ),
        revenue_computed_at=Subquery(stored.values("computed_at")[:1]),
        period_cost=Coalesce(
            Subquery(costs, output_field=cost), Value(0), output_field=cost
        ),
    ).annotate(
        period_margin=ExpressionWrapper(
            F("period_revenue") - F("period_cost"), output_field=cost
        ),
        period_margin_percent=Case(
            When(period_revenue=0, then=Value(None)),
            default=Round(
                F("period_margin") * 100 / F("period_revenue"), 4, output_field=cost
            ),
            output_field=cost,
        ),
    )
