"""Mid-period plan changes, cancellation and the stored period revenue."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from billing.invoicing import prorated_included, usage_segments
from billing.models import PeriodRevenue, PeriodStatement, Subscription
from billing.revenue import customers_with_margin, period_revenue_refresh
from billing.services import (
    execution_record_outcome,
    statements_close_ended_periods,
    subscription_cancel,
    subscription_change_plan,
)
from customers.models import Customer
from tests.billing.test_invoicing import (
    add_executions,
    amounts,
    make_plan,
    preview,
    subscribe,
)

pytestmark = pytest.mark.django_db

D = Decimal
FEBRUARY = (date(2025, 2, 1), date(2025, 3, 1))
MARCH = (date(2025, 3, 1), date(2025, 4, 1))


@pytest.fixture
def starter():
    return make_plan(
        "starter",
        "hybrid",
        monthly_price=D("49.00"),
        included_executions=50,
        overage_price=D("0.50"),
    )


@pytest.fixture
def scale():
    return make_plan(
        "scale",
        "hybrid",
        monthly_price=D("99.00"),
        included_executions=200,
        overage_price=D("0.25"),
    )


def subscription_of(customer) -> Subscription:
    return Subscription.objects.get(customer=customer)


# Prorated changes split usage -------------------------------------------


def test_prorated_change_splits_usage(starter, scale):
    customer = subscribe(starter, start=FEBRUARY[0])
    subscription_change_plan(
        subscription=subscription_of(customer),
        plan=scale,
        prorate=True,
        at=date(2025, 2, 15),
    )
    # Feb 1-14 on starter: 14 of 28 days, so 25 of its 50 executions are
    # included; 40 succeeded, 15 above at 0.50 = 7.50.
    add_executions(customer, 40, at=datetime(2025, 2, 10, tzinfo=UTC))
    # Feb 15-28 on scale: 100 of its 200 included; 130 succeeded, 30 above
    # at 0.25 = 7.50.
    add_executions(customer, 130, at=datetime(2025, 2, 20, tzinfo=UTC))
    result = preview(customer, FEBRUARY)
    assert amounts(result) == [
        ("base", D("49.00")),
        ("proration_credit", D("-24.50")),
        ("proration_charge", D("49.50")),
        ("executions", D("0.00")),
        ("overage", D("7.50")),
        ("executions", D("0.00")),
        ("overage", D("7.50")),
    ]
    assert result.total == D("89.00")
    descriptions = [line.description for line in result.lines]
    assert descriptions[3] == (
        "Starter, 2025-02-01 to 2025-02-14: Succeeded executions (25 included)"
    )
    assert descriptions[5] == (
        "Scale, 2025-02-15 to 2025-02-28: Succeeded executions (100 included)"
    )
    # The next period is whole again, on the new plan.
    add_executions(customer, 201, at=datetime(2025, 3, 5, tzinfo=UTC))
    assert amounts(preview(customer, MARCH)) == [
        ("base", D("99.00")),
        ("executions", D("0.00")),
        ("overage", D("0.25")),
    ]


def test_first_day_change_one_segment(starter, scale):
    customer = subscribe(starter, start=FEBRUARY[0])
    subscription_change_plan(
        subscription=subscription_of(customer), plan=scale, prorate=True, at=FEBRUARY[0]
    )
    segments = usage_segments(subscription_of(customer), *FEBRUARY)
    assert [(s.plan.slug, s.start, s.end, s.share) for s in segments] == [
        ("scale", FEBRUARY[0], FEBRUARY[1], D(1))
    ]


def test_prorated_minimum_fee():
    fees = make_plan(
        "fees",
        "success_fee",
        success_fee_kind="fixed_fee",
        fee_per_success=D("1.00"),
        minimum_monthly_fee=D("30.00"),
    )
    flat = make_plan("flat", "subscription", monthly_price=D("10.00"))
    customer = subscribe(fees, start=FEBRUARY[0])
    subscription_change_plan(
        subscription=subscription_of(customer),
        plan=flat,
        prorate=True,
        at=date(2025, 2, 8),
    )
    add_executions(customer, 2, at=datetime(2025, 2, 3, tzinfo=UTC), outcome="5.00")
    # 7 of 28 days on the fee plan: its 30.00 minimum becomes 7.50, and two
    # fees of 1.00 are topped up by 5.50. The flat plan's 21 days: 7.50.
    assert amounts(preview(customer, FEBRUARY)) == [
        ("proration_credit", D("0.00")),
        ("proration_charge", D("7.50")),
        ("success_fee", D("2.00")),
        ("minimum_fee", D("5.50")),
    ]


@pytest.mark.parametrize(
    ("included", "share", "expected"),
    [
        (50, D(14) / D(28), 25),
        (50, D(15) / D(28), 27),  # 26.79 rounds half up to 27
        (1, D(1) / D(2), 1),  # 0.5 rounds up
        (0, D(1) / D(3), 0),
    ],
)
def test_prorated_included_executions(included, share, expected):
    assert prorated_included(included, share) == expected


# Cancellation -------------------------------------------------------------


def test_cancel_at_period_end(starter):
    customer = subscribe(starter, start=FEBRUARY[0])
    subscription = subscription_cancel(
        subscription=subscription_of(customer), at=date(2025, 2, 10)
    )
    assert subscription.status == Subscription.Status.ACTIVE
    assert subscription.cancel_at_period_end
    assert subscription.ended_on == FEBRUARY[1]
    add_executions(customer, 60, at=datetime(2025, 2, 20, tzinfo=UTC))
    assert preview(customer, FEBRUARY).total == D("54.00")

    assert statements_close_ended_periods(today=date(2025, 3, 1)) == 1
    assert subscription_of(customer).status == Subscription.Status.CANCELED
    assert PeriodStatement.objects.get(customer=customer).revenue_total == D("54.00")
    # Nothing after the end is billed, and a later run closes nothing.
    add_executions(customer, 5, at=datetime(2025, 3, 2, tzinfo=UTC))
    assert amounts(preview(customer, MARCH)) == []
    assert statements_close_ended_periods(today=date(2025, 5, 1)) == 0


def test_cancel_immediately(starter):
    customer = subscribe(starter, start=FEBRUARY[0])
    add_executions(customer, 55, at=datetime(2025, 2, 5, tzinfo=UTC))
    add_executions(customer, 40, at=datetime(2025, 2, 12, tzinfo=UTC))
    subscription = subscription_cancel(
        subscription=subscription_of(customer),
        at=date(2025, 2, 10),
        at_period_end=False,
    )
    assert subscription.status == Subscription.Status.CANCELED
    assert subscription.ended_on == date(2025, 2, 10)
    # Only the 55 runs before Feb 10 count, against all 50 included.
    assert amounts(preview(customer, FEBRUARY)) == [
        ("base", D("49.00")),
        ("executions", D("0.00")),
        ("overage", D("2.50")),
    ]
    # The period is still closed once, at its natural end.
    assert statements_close_ended_periods(today=date(2025, 2, 20)) == 0
    assert statements_close_ended_periods(today=date(2025, 3, 1)) == 1
    assert statements_close_ended_periods(today=date(2025, 4, 1)) == 0


def test_cancel_rejects_repeats(starter, scale):
    customer = subscribe(starter, start=FEBRUARY[0])
    subscription_cancel(subscription=subscription_of(customer), at=date(2025, 2, 10))
    with pytest.raises(ValidationError, match="ends on 2025-03-01"):
        subscription_change_plan(
            subscription=subscription_of(customer),
            plan=scale,
            prorate=False,
            at=date(2025, 3, 2),
        )
    subscription_cancel(
        subscription=subscription_of(customer),
        at=date(2025, 2, 11),
        at_period_end=False,
    )
    with pytest.raises(ValidationError, match="already canceled"):
        subscription_cancel(
            subscription=subscription_of(customer), at=date(2025, 2, 12)
        )


def test_cancel_before_start_rejected(starter):
    customer = subscribe(starter, start=FEBRUARY[0])
    with pytest.raises(ValidationError, match="before the subscription started"):
        subscription_cancel(subscription=subscription_of(customer), at=date(2025, 1, 5))


def test_past_due_periods_closed(starter):
    customer = subscribe(starter, start=FEBRUARY[0])
    Subscription.objects.filter(customer=customer).update(
        status=Subscription.Status.PAST_DUE
    )
    assert statements_close_ended_periods(today=date(2025, 3, 1)) == 1


# Stored revenue -----------------------------------------------------------


def test_revenue_refresh_updates_row(starter):
    customer = subscribe(starter, start=FEBRUARY[0])
    add_executions(customer, 100, at=datetime(2025, 2, 5, tzinfo=UTC), cost="0.02")
    assert period_revenue_refresh(today=date(2025, 2, 20)) == 1
    stored = PeriodRevenue.objects.get(customer=customer, period_start=FEBRUARY[0])
    assert (stored.period_start, stored.period_end, stored.revenue) == (
        FEBRUARY[0],
        FEBRUARY[1],
        D("74.00"),
    )
    # Refreshing again updates the same row.
    add_executions(customer, 10, at=datetime(2025, 2, 6, tzinfo=UTC))
    period_revenue_refresh(today=date(2025, 2, 20))
    february = PeriodRevenue.objects.get(customer=customer, period_start=FEBRUARY[0])
    assert february.revenue == D("79.00")


def test_outcome_refreshes_revenue():
    fees = make_plan(
        "commission",
        "success_fee",
        success_fee_kind="commission",
        commission_percent=D(2),
    )
    today = datetime.now(UTC).date()
    customer = subscribe(fees, start=today)
    add_executions(customer, 1, at=datetime.now(UTC))
    execution = customer.executions.get()
    execution_record_outcome(execution=execution, value_usd=D("500.00"))
    assert PeriodRevenue.objects.get(customer=customer).revenue == D("10.00")


def test_margin_annotation_one_query(starter, django_assert_num_queries):
    customer = subscribe(starter, start=FEBRUARY[0])
    period_revenue_refresh(today=date(2025, 2, 20))
    with django_assert_num_queries(1):
        row = customers_with_margin(
            Customer.objects.filter(pk=customer.pk), today=date(2025, 2, 20)
        ).get()
    assert row.period_revenue == D("49.00")
    assert row.period_cost == D(0)
    assert row.period_margin == D("49.00")
    assert row.period_margin_percent == D("100.0000")
