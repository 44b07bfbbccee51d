from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from agents.models import Execution
from billing.invoicing import invoice_preview
from billing.models import PeriodStatement, Plan, Subscription
from billing.services import (
    statement_close_period,
    statements_close_ended_periods,
    subscription_change_plan,
    subscription_create,
)
from billing.tasks import close_periods
from tests.factories import CustomerFactory, WorkflowFactory

pytestmark = pytest.mark.django_db

D = Decimal
APRIL = (date(2025, 4, 1), date(2025, 5, 1))
SUCCEEDED = Execution.Status.SUCCEEDED


def make_plan(slug, billing_model, **fields) -> Plan:
    plan = Plan(name=slug.title(), slug=slug, billing_model=billing_model, **fields)
    plan.full_clean()
    plan.save()
    return plan


def subscribe(plan, start=APRIL[0]):
    customer = CustomerFactory()
    subscription_create(customer=customer, plan=plan, start=start)
    return customer


def add_executions(
    customer,
    count,
    *,
    at=datetime(2025, 4, 10, 12, tzinfo=UTC),
    status=SUCCEEDED,
    cost="0",
    outcome=None,
):
    """Insert `count` executions created at `at`, in two queries."""
    workflow = WorkflowFactory(slug="billing-workflow")
    executions = Execution.objects.bulk_create(
        Execution(
            customer=customer,
            workflow=workflow,
            prompt="Run.",
            requested_model=workflow.model,
            status=status,
            cost_usd=D(cost),
            outcome_value_usd=None if outcome is None else D(outcome),
        )
        for _ in range(count)
    )
    # created_at is auto_now_add, so set it after the insert.
    Execution.objects.filter(pk__in=[e.pk for e in executions]).update(created_at=at)


def preview(customer, period=APRIL):
    return invoice_preview(
        customer=customer, period_start=period[0], period_end=period[1]
    )


def amounts(result):
    return [(line.kind, line.amount) for line in result.lines]


# Hybrid ------------------------------------------------------------------


@pytest.fixture
def hybrid():
    return make_plan(
        "hybrid",
        "hybrid",
        monthly_price=D("49.00"),
        included_executions=50,
        overage_price=D("0.50"),
    )


def test_hybrid_within_included_executions(hybrid):
    customer = subscribe(hybrid)
    add_executions(customer, 10)
    result = preview(customer)
    assert amounts(result) == [("base", D("49.00")), ("executions", D("0.00"))]
    assert result.lines[1].quantity == 10
    assert result.total == D("49.00")


def test_hybrid_overage(hybrid):
    customer = subscribe(hybrid)
    add_executions(customer, 100)
    result = preview(customer)
    # 49.00 + (100 - 50) * 0.50 = 74.00.
    assert amounts(result) == [
        ("base", D("49.00")),
        ("executions", D("0.00")),
        ("overage", D("25.00")),
    ]
    assert result.lines[2].quantity == 50
    assert result.total == D("74.00")


def test_hybrid_counts_only_succeeded(hybrid):
    customer = subscribe(hybrid)
    add_executions(customer, 50)
    for status in Execution.Status:
        if status != SUCCEEDED:
            add_executions(customer, 5, status=status, cost="0.10")
    result = preview(customer)
    assert result.total == D("49.00")
    # Our cost counts every execution created in the period: 6 statuses * 5 * 0.10.
    assert result.cost_usd == D("3.00")


def test_hybrid_graduated_tiers():
    plan = make_plan(
        "tiered",
        "hybrid",
        monthly_price=D("20.00"),
        included_executions=10,
        overage_tiers=[
            {"up_to": 100, "unit_price": "0.50"},
            {"up_to": None, "unit_price": "0.40"},
        ],
    )
    customer = subscribe(plan)
    add_executions(customer, 160)
    result = preview(customer)
    # 150 above the 10 included: 100 * 0.50 = 50.00, then 50 * 0.40 = 20.00.
    assert amounts(result) == [
        ("base", D("20.00")),
        ("executions", D("0.00")),
        ("overage", D("50.00")),
        ("overage", D("20.00")),
    ]
    assert [line.quantity for line in result.lines[2:]] == [100, 50]
    assert result.total == D("90.00")


# Usage-based -----------------------------------------------------------


def test_per_execution_pricing():
    plan = make_plan(
        "metered", "usage", usage_pricing="per_execution", price_per_execution=D("0.25")
    )
    customer = subscribe(plan)
    add_executions(customer, 7)
    add_executions(customer, 3, status=Execution.Status.FAILED)
    result = preview(customer)
    # 7 succeeded * 0.25 = 1.75; the failed runs are not billed.
    assert amounts(result) == [("usage", D("1.75"))]
    assert result.total == D("1.75")


def test_cost_plus_pricing():
    plan = make_plan(
        "cost-plus", "usage", usage_pricing="cost_plus", cost_markup=D("1.5")
    )
    customer = subscribe(plan)
    add_executions(customer, 1, cost="0.123456")
    add_executions(customer, 1, cost="0.2")
    add_executions(customer, 1, cost="1.0", status=Execution.Status.FAILED)
    result = preview(customer)
    # (0.123456 + 0.2) * 1.5 = 0.485184 -> 0.49.
    assert amounts(result) == [("usage", D("0.49"))]
    assert result.lines[0].quantity == D("0.323456")
    assert result.cost_usd == D("1.323456")


def test_ten_thousand_executions_do_not_drift():
    plan = make_plan(
        "dime", "usage", usage_pricing="per_execution", price_per_execution=D("0.10")
    )
    customer = subscribe(plan)
    add_executions(customer, 10_000)
    assert preview(customer).total == D("1000.00")


def test_half_cent_rounds_up_once_per_line():
    plan = make_plan(
        "half-cent",
        "usage",
        usage_pricing="per_execution",
        price_per_execution=D("0.005"),
    )
    single_run = subscribe(plan)
    add_executions(single_run, 1)
    three_runs = subscribe(plan)
    add_executions(three_runs, 3)
    assert preview(single_run).total == D("0.01")
    # 3 * 0.005 = 0.015 -> 0.02, not 3 * 0.01.
    assert preview(three_runs).total == D("0.02")


# Success fees ------------------------------------------------------------


def test_commission_and_statement_margin():
    plan = make_plan(
        "commission",
        "success_fee",
        success_fee_kind="commission",
        commission_percent=D("2"),
    )
    customer = subscribe(plan)
    add_executions(customer, 1, cost="0.15", outcome="500.00")
    result = preview(customer)
    assert amounts(result) == [("success_fee", D("10.00"))]
    statement = statement_close_period(
        customer=customer, period_start=APRIL[0], period_end=APRIL[1]
    )
    assert statement.revenue_total == D("10.00")
    assert statement.cost_total == D("0.15")
    assert statement.margin == D("9.85")
    assert statement.margin_percent == D("98.50")


def test_commission_ignores_failed_and_valueless_runs():
    plan = make_plan(
        "commission",
        "success_fee",
        success_fee_kind="commission",
        commission_percent=D("2"),
    )
    customer = subscribe(plan)
    add_executions(customer, 1, outcome="100.00")
    add_executions(customer, 1, outcome="900.00", status=Execution.Status.FAILED)
    add_executions(customer, 4)
    assert preview(customer).total == D("2.00")


def test_fixed_fee_with_minimum_monthly_fee():
    plan = make_plan(
        "fixed-fee",
        "success_fee",
        success_fee_kind="fixed_fee",
        fee_per_success=D("2.00"),
        minimum_monthly_fee=D("25.00"),
    )
    small = subscribe(plan)
    add_executions(small, 3, outcome="1.00")
    # 3 * 2.00 = 6.00, topped up by 19.00 to the 25.00 minimum.
    assert amounts(preview(small)) == [
        ("success_fee", D("6.00")),
        ("minimum_fee", D("19.00")),
    ]
    large = subscribe(plan)
    add_executions(large, 20, outcome="1.00")
    assert amounts(preview(large)) == [("success_fee", D("40.00"))]
    idle = subscribe(plan)
    assert amounts(preview(idle)) == [("minimum_fee", D("25.00"))]


# Periods -----------------------------------------------------------------


def test_execution_at_period_end_belongs_to_next_period():
    plan = make_plan(
        "metered", "usage", usage_pricing="per_execution", price_per_execution=D("1.00")
    )
    customer = subscribe(plan, start=date(2025, 3, 1))
    end = datetime(2025, 4, 1, tzinfo=UTC)
    add_executions(customer, 1, at=end - timedelta(microseconds=1))
    add_executions(customer, 2, at=end)
    assert preview(customer, (date(2025, 3, 1), date(2025, 4, 1))).total == D("1.00")
    assert preview(customer, APRIL).total == D("2.00")


def test_period_must_match_subscription():
    plan = make_plan("basic", "subscription", monthly_price=D("49.00"))
    customer = subscribe(plan, start=date(2025, 1, 31))
    with pytest.raises(ValueError, match="not a billing period"):
        preview(customer, (date(2025, 2, 1), date(2025, 3, 1)))
    result = preview(customer, (date(2025, 1, 31), date(2025, 2, 28)))
    assert result.total == D("49.00")


def test_zero_usage_subscription_bills_base_only():
    plan = make_plan("basic", "subscription", monthly_price=D("49.00"))
    customer = subscribe(plan)
    assert amounts(preview(customer)) == [("base", D("49.00"))]


def test_zero_usage_usage_plan_bills_nothing():
    plan = make_plan(
        "metered", "usage", usage_pricing="per_execution", price_per_execution=D("1.00")
    )
    customer = subscribe(plan)
    result = preview(customer)
    assert result.lines == ()
    assert result.total == D("0")


def test_customer_without_subscription_bills_nothing():
    customer = CustomerFactory()
    add_executions(customer, 2, cost="0.50")
    result = preview(customer)
    assert result.lines == ()
    assert result.cost_usd == D("1.00")


# Plan changes ------------------------------------------------------------


@pytest.fixture
def basic():
    return make_plan("basic", "subscription", monthly_price=D("49.00"))


@pytest.fixture
def pro():
    return make_plan("pro", "subscription", monthly_price=D("99.00"))


FEBRUARY = (date(2025, 2, 1), date(2025, 3, 1))
MARCH = (date(2025, 3, 1), date(2025, 4, 1))


def test_plan_change_with_proration(basic, pro):
    customer = subscribe(basic, start=FEBRUARY[0])
    subscription = Subscription.objects.get(customer=customer)
    subscription_change_plan(
        subscription=subscription, plan=pro, prorate=True, at=date(2025, 2, 11)
    )
    # February has 28 days and 18 remain from Feb 11.
    # Base 49.00, credit -49.00 * 18 / 28 = -31.50,
    # charge 99.00 * 18 / 28 = 63.642857... -> 63.64; total 81.14.
    assert amounts(preview(customer, FEBRUARY)) == [
        ("base", D("49.00")),
        ("proration_credit", D("-31.50")),
        ("proration_charge", D("63.64")),
    ]
    assert preview(customer, FEBRUARY).total == D("81.14")
    assert amounts(preview(customer, MARCH)) == [("base", D("99.00"))]


def test_plan_change_without_proration(basic, pro):
    customer = subscribe(basic, start=FEBRUARY[0])
    subscription = Subscription.objects.get(customer=customer)
    subscription_change_plan(
        subscription=subscription, plan=pro, prorate=False, at=date(2025, 2, 11)
    )
    # No proration: February stays 49.00 and March bills the new 99.00.
    assert amounts(preview(customer, FEBRUARY)) == [("base", D("49.00"))]
    assert amounts(preview(customer, MARCH)) == [("base", D("99.00"))]


def test_prorated_change_to_usage_plan_prices_usage_with_new_plan(basic):
    metered = make_plan(
        "metered", "usage", usage_pricing="per_execution", price_per_execution=D("0.10")
    )
    customer = subscribe(basic, start=FEBRUARY[0])
    subscription = Subscription.objects.get(customer=customer)
    subscription_change_plan(
        subscription=subscription, plan=metered, prorate=True, at=date(2025, 2, 15)
    )
    add_executions(customer, 30, at=datetime(2025, 2, 20, tzinfo=UTC))
    # 14 of 28 days remain: credit -49.00 * 14 / 28 = -24.50, charge 0.00
    # for a plan with no monthly price; usage 30 * 0.10 = 3.00.
    assert amounts(preview(customer, FEBRUARY)) == [
        ("base", D("49.00")),
        ("proration_credit", D("-24.50")),
        ("proration_charge", D("0.00")),
        ("usage", D("3.00")),
    ]
    assert preview(customer, FEBRUARY).total == D("27.50")


# Statements --------------------------------------------------------------


def test_statement_matches_preview(hybrid):
    customer = subscribe(hybrid)
    add_executions(customer, 100, cost="0.03")
    result = preview(customer)
    statement = statement_close_period(
        customer=customer, period_start=APRIL[0], period_end=APRIL[1]
    )
    assert statement.lines == [line.as_json() for line in result.lines]
    assert statement.revenue_total == result.total == D("74.00")
    assert statement.cost_total == D("3.00")
    assert statement.margin == D("71.00")
    assert statement.margin_percent == D("95.95")


def test_statement_close_is_idempotent(hybrid):
    customer = subscribe(hybrid)
    add_executions(customer, 100)
    first = statement_close_period(
        customer=customer, period_start=APRIL[0], period_end=APRIL[1]
    )
    add_executions(customer, 100)
    second = statement_close_period(
        customer=customer, period_start=APRIL[0], period_end=APRIL[1]
    )
    assert second.pk == first.pk
    assert second.revenue_total == D("74.00")
    assert second.lines == first.lines
    assert PeriodStatement.objects.count() == 1


def test_statement_of_zero_revenue_has_no_margin_percent():
    customer = CustomerFactory()
    statement = statement_close_period(
        customer=customer, period_start=APRIL[0], period_end=APRIL[1]
    )
    assert statement.revenue_total == D("0")
    assert statement.margin_percent is None


def test_close_ended_periods_from_january_31(basic):
    customer = subscribe(basic, start=date(2025, 1, 31))
    assert statements_close_ended_periods(today=date(2025, 4, 30)) == 3
    periods = list(
        PeriodStatement.objects.filter(customer=customer)
        .order_by("period_start")
        .values_list("period_start", "period_end", "revenue_total")
    )
    assert periods == [
        (date(2025, 1, 31), date(2025, 2, 28), D("49.00")),
        (date(2025, 2, 28), date(2025, 3, 31), D("49.00")),
        (date(2025, 3, 31), date(2025, 4, 30), D("49.00")),
    ]
    subscription = Subscription.objects.get(customer=customer)
    assert subscription.current_period_start == date(2025, 4, 30)
    assert subscription.current_period_end == date(2025, 5, 31)
    assert statements_close_ended_periods(today=date(2025, 4, 30)) == 0
    assert statements_close_ended_periods(today=date(2025, 5, 30)) == 0
    assert statements_close_ended_periods(today=date(2025, 5, 31)) == 1


def test_close_skips_canceled_subscriptions(basic):
    customer = subscribe(basic, start=date(2025, 1, 1))
    Subscription.objects.filter(customer=customer).update(
        status=Subscription.Status.CANCELED
    )
    assert statements_close_ended_periods(today=date(2025, 4, 1)) == 0


def test_close_periods_task_runs_twice(basic):
    start = datetime.now(UTC).date() - timedelta(days=70)
    subscribe(basic, start=start)
    closed = close_periods()
    assert closed >= 2
    assert close_periods() == 0
    assert PeriodStatement.objects.count() == closed


def test_statement_of_open_period_rejected():
    customer = CustomerFactory()
    today = datetime.now(UTC).date()
    with pytest.raises(ValueError, match="has not ended"):
        statement_close_period(
            customer=customer,
            period_start=today,
            period_end=today + timedelta(days=1),
        )
    assert not PeriodStatement.objects.exists()
