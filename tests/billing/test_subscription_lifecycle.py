"""Mid-period plan changes, cancellation and the stored period revenue."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from billing import services
from billing.invoicing import included_executions, split_included, usage_segments
from billing.models import PeriodRevenue, PeriodStatement, Subscription
from billing.revenue import customers_with_margin, period_revenue_refresh
from billing.services import (
    execution_record_outcome,
    statements_close_ended_periods,
    subscription_cancel,
    subscription_change_plan,
    subscription_create,
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


@pytest.fixture
def basic_and_pro():
    return (
        make_plan("basic", "subscription", monthly_price=D("100.00")),
        make_plan("pro", "subscription", monthly_price=D("200.00")),
    )


def subscription_of(customer) -> Subscription:
    """Return the customer's latest subscription."""
    return (
        Subscription.objects.filter(customer=customer)
        .order_by("-started_on", "-id")
        .first()
    )


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
    ("exact", "expected"),
    [
        ([D(25), D(100)], [25, 100]),
        # 3 included split in halves: 1.5 and 1.5 make 3, not 2 + 2.
        ([D("1.5"), D("1.5")], [2, 1]),
        ([D(50) * D(15) / D(28), D(50) * D(13) / D(28)], [27, 23]),
        ([D(1) / D(3), D(1) / D(3), D(1) / D(3)], [1, 0, 0]),
        ([D(0)], [0]),
    ],
)
def test_split_included(exact, expected):
    assert split_included(exact) == expected


def test_split_period_never_adds_included():
    halves = [
        make_plan(
            slug,
            "hybrid",
            monthly_price=D(0),
            included_executions=3,
            overage_price=D(1),
        )
        for slug in ("first-half", "second-half")
    ]
    customer = subscribe(halves[0], start=date(2025, 4, 1))
    subscription_change_plan(
        subscription=subscription_of(customer),
        plan=halves[1],
        prorate=True,
        at=date(2025, 4, 16),
    )
    add_executions(customer, 2, at=datetime(2025, 4, 5, tzinfo=UTC))
    add_executions(customer, 2, at=datetime(2025, 4, 20, tzinfo=UTC))
    # 3 included over the month and 4 succeeded: one execution of overage.
    result = preview(customer, (date(2025, 4, 1), date(2025, 5, 1)))
    assert result.total == D("1.00")


def test_prorated_change_on_period_start(basic_and_pro):
    basic, pro = basic_and_pro
    customer = subscribe(basic, start=FEBRUARY[0])
    subscription_change_plan(
        subscription=subscription_of(customer), plan=pro, prorate=True, at=MARCH[0]
    )
    # Nothing of March was used on basic: March is pro's, without proration.
    assert amounts(preview(customer, MARCH)) == [("base", D("200.00"))]
    assert amounts(preview(customer, FEBRUARY)) == [("base", D("100.00"))]


def test_prorated_change_on_start_day(basic_and_pro):
    basic, pro = basic_and_pro
    customer = subscribe(basic, start=FEBRUARY[0])
    subscription_change_plan(
        subscription=subscription_of(customer), plan=pro, prorate=True, at=FEBRUARY[0]
    )
    assert amounts(preview(customer, FEBRUARY)) == [("base", D("200.00"))]


def test_later_change_replaces_waiting_one(basic_and_pro):
    basic, pro = basic_and_pro
    premium = make_plan("premium", "subscription", monthly_price=D("300.00"))
    customer = subscribe(basic, start=FEBRUARY[0])
    subscription_change_plan(
        subscription=subscription_of(customer),
        plan=pro,
        prorate=False,
        at=date(2025, 2, 5),
    )
    subscription_change_plan(
        subscription=subscription_of(customer),
        plan=premium,
        prorate=True,
        at=date(2025, 2, 15),
    )
    assert subscription_of(customer).plan == premium
    assert amounts(preview(customer, MARCH)) == [("base", D("300.00"))]
    assert subscription_of(customer).changes.count() == 1


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


def test_cancel_then_subscribe_again(basic_and_pro):
    basic, pro = basic_and_pro
    customer = subscribe(basic, start=FEBRUARY[0])
    subscription_cancel(
        subscription=subscription_of(customer),
        at=date(2025, 2, 10),
        at_period_end=False,
    )
    subscription_create(customer=customer, plan=pro, start=date(2025, 2, 10))
    # The old period keeps its whole base charge; the new subscription has
    # its own periods from February 10.
    assert amounts(preview(customer, FEBRUARY)) == [("base", D("100.00"))]
    new_period = (date(2025, 2, 10), date(2025, 3, 10))
    assert amounts(preview(customer, new_period)) == [("base", D("200.00"))]

    assert statements_close_ended_periods(today=date(2025, 4, 20)) == 3
    periods = list(
        PeriodStatement.objects.filter(customer=customer)
        .order_by("period_start")
        .values_list("period_start", "revenue_total")
    )
    assert periods == [
        (date(2025, 2, 1), D("100.00")),
        (date(2025, 2, 10), D("200.00")),
        (date(2025, 3, 10), D("200.00")),
    ]
    assert statements_close_ended_periods(today=date(2025, 4, 20)) == 0


def test_close_job_goes_on_after_a_failure(basic_and_pro, monkeypatch, caplog):
    basic, _ = basic_and_pro
    first = subscribe(basic, start=FEBRUARY[0])
    second = subscribe(basic, start=FEBRUARY[0])
    real_close = services.statement_close_period

    def fail_for_first(*, customer, **kwargs):
        if customer == first:
            raise RuntimeError("statement store down")
        return real_close(customer=customer, **kwargs)

    monkeypatch.setattr(services, "statement_close_period", fail_for_first)
    assert statements_close_ended_periods(today=MARCH[0]) == 1
    assert PeriodStatement.objects.get().customer == second
    assert "closing its periods up to 2025-03-01 failed" in caplog.text


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


def test_calendar_month_before_subscription_start(basic_and_pro):
    basic, _ = basic_and_pro
    customer = subscribe(basic, start=date(2025, 2, 4))
    # Margins fall back to the calendar month for a day before the
    # subscription's first period; that month bills nothing, and raises nothing.
    assert amounts(preview(customer, FEBRUARY)) == []
    assert amounts(preview(customer, (date(2025, 2, 4), date(2025, 3, 4)))) == [
        ("base", D("100.00"))
    ]


def test_included_executions_prorated(starter, scale):
    customer = subscribe(starter, start=FEBRUARY[0])
    subscription = subscription_of(customer)
    assert included_executions(subscription, *FEBRUARY) == 50
    subscription_change_plan(
        subscription=subscription, plan=scale, prorate=True, at=date(2025, 2, 15)
    )
    # Half of February on each: 25 of starter's 50 and 100 of scale's 200.
    assert included_executions(subscription, *FEBRUARY) == 125


def test_included_executions_without_hybrid(basic_and_pro):
    basic, _ = basic_and_pro
    customer = subscribe(basic, start=FEBRUARY[0])
    assert included_executions(subscription_of(customer), *FEBRUARY) is None
