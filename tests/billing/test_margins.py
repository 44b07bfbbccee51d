from datetime import date
from decimal import Decimal

import pytest

from agents.models import Execution
from billing.margins import (
    customer_margin,
    elapsed_fraction,
    margin_percent,
    margin_report,
)
from billing.models import Plan
from billing.rollups import roll_up_usage
from billing.services import statement_close_period, subscription_create
from tests.billing.usage import add_message, at, make_execution
from tests.factories import CustomerFactory, WorkflowFactory

pytestmark = pytest.mark.django_db

D = Decimal
APRIL_START = date(2025, 4, 1)
MID_APRIL = at("2025-04-16T00:00:00")
SONNET = "claude-sonnet-4-6"


def make_plan(slug, billing_model, **fields) -> Plan:
    plan = Plan(name=slug.title(), slug=slug, billing_model=billing_model, **fields)
    plan.full_clean()
    plan.save()
    return plan


def per_execution_plan(price="0.50"):
    return make_plan(
        f"usage-{price.replace('.', '-')}",
        Plan.BillingModel.USAGE,
        usage_pricing=Plan.UsagePricing.PER_EXECUTION,
        price_per_execution=D(price),
    )


def run(customer, workflow, cost="0.30", when="2025-04-10T12:00:00"):
    """Create one succeeded execution with one message of `cost`."""
    execution = make_execution(customer, workflow, at(when))
    add_message(execution, workflow.model, at(when), cost=D(cost))
    Execution.objects.filter(pk=execution.pk).update(cost_usd=D(cost))
    return execution


def test_customer_margin_from_plan_and_rollups():
    customer = CustomerFactory(slug="acme")
    subscription_create(customer=customer, plan=per_execution_plan(), start=APRIL_START)
    workflow = WorkflowFactory(slug="review", model=SONNET)
    for _ in range(4):
        run(customer, workflow)
    roll_up_usage(full=True)

    figures = customer_margin(customer=customer, day=date(2025, 4, 15), now=MID_APRIL)

    assert (figures.period_start, figures.period_end) == (APRIL_START, date(2025, 5, 1))
    assert figures.revenue == D("2.00")
    assert figures.cost == D("1.20")
    assert figures.margin == D("0.80")
    assert figures.margin_percent == D("40.0000")
    assert figures.unprofitable is False
    assert figures.closed is False


def test_projection_uses_run_rate():
    customer = CustomerFactory(slug="acme")
    subscription_create(customer=customer, plan=per_execution_plan(), start=APRIL_START)
    workflow = WorkflowFactory(slug="review", model=SONNET)
    for _ in range(4):
        run(customer, workflow)
    roll_up_usage(full=True)

    # April 16 00:00 is 15 of the period's 30 days.
    figures = customer_margin(customer=customer, day=date(2025, 4, 15), now=MID_APRIL)

    assert figures.elapsed == D("0.5")
    assert figures.projected_cost == D("2.40")
    assert figures.projected_revenue == D("4.00")
    assert figures.projected_margin == D("1.60")


def test_projection_keeps_base_charge_fixed():
    plan = make_plan(
        "hybrid",
        Plan.BillingModel.HYBRID,
        monthly_price=D("49.00"),
        included_executions=100,
        overage_price=D("0.40"),
    )
    customer = CustomerFactory(slug="acme")
    subscription_create(customer=customer, plan=plan, start=APRIL_START)
    workflow = WorkflowFactory(slug="review", model=SONNET)
    run(customer, workflow, cost="1.00")
    roll_up_usage(full=True)

    figures = customer_margin(customer=customer, day=date(2025, 4, 15), now=MID_APRIL)

    assert figures.revenue == D("49.00")
    assert figures.fixed_revenue == D("49.00")
    assert figures.projected_revenue == D("49.00")
    assert figures.projected_cost == D("2.00")


def test_projection_none_before_period_starts():
    customer = CustomerFactory(slug="acme")
    subscription_create(customer=customer, plan=per_execution_plan(), start=APRIL_START)

    figures = customer_margin(
        customer=customer, day=APRIL_START, now=at("2025-03-31T23:00:00")
    )

    assert figures.elapsed == 0
    assert figures.projected_cost is None
    assert figures.projected_revenue is None
    assert figures.projected_margin is None


def test_elapsed_fraction_bounds():
    end = date(2025, 5, 1)
    assert elapsed_fraction(APRIL_START, end, at("2025-03-01T00:00:00")) == 0
    assert elapsed_fraction(APRIL_START, end, at("2025-04-04T00:00:00")) == D("0.1")
    assert elapsed_fraction(APRIL_START, end, at("2025-06-01T00:00:00")) == 1


def test_margin_percent_none_without_revenue():
    assert margin_percent(D("-1.00"), D("0")) is None
    assert margin_percent(D("1"), D("3")) == D("33.3333")


def test_unprofitable_customer_flagged():
    customer = CustomerFactory(slug="cheap")
    plan = per_execution_plan("0.10")
    subscription_create(customer=customer, plan=plan, start=APRIL_START)
    workflow = WorkflowFactory(slug="review", model=SONNET)
    run(customer, workflow)
    roll_up_usage(full=True)

    figures = customer_margin(customer=customer, day=date(2025, 4, 15), now=MID_APRIL)

    assert figures.margin == D("-0.20")
    assert figures.margin_percent == D("-200.0000")
    assert figures.unprofitable is True


def test_customer_without_subscription_has_no_revenue():
    customer = CustomerFactory(slug="trial")
    run(customer, WorkflowFactory(slug="review", model=SONNET))
    roll_up_usage(full=True)

    figures = customer_margin(customer=customer, day=date(2025, 4, 15), now=MID_APRIL)

    assert (figures.period_start, figures.period_end) == (APRIL_START, date(2025, 5, 1))
    assert figures.revenue == 0
    assert figures.margin_percent is None
    assert figures.unprofitable is True


def test_closed_period_reads_statement_revenue():
    customer = CustomerFactory(slug="acme")
    plan = per_execution_plan()
    subscription_create(customer=customer, plan=plan, start=APRIL_START)
    workflow = WorkflowFactory(slug="review", model=SONNET)
    run(customer, workflow)
    roll_up_usage(full=True)
    statement = statement_close_period(
        customer=customer, period_start=APRIL_START, period_end=date(2025, 5, 1)
    )
    # A price change after the close does not change the closed revenue.
    Plan.objects.filter(pk=plan.pk).update(price_per_execution=D("9.00"))

    figures = customer_margin(
        customer=customer, day=date(2025, 4, 15), now=at("2025-05-02T00:00:00")
    )

    assert figures.closed is True
    assert figures.revenue == statement.revenue_total == D("0.50")
    assert figures.projected_revenue == D("0.50")
    assert figures.projected_cost == D("0.30")


def test_report_allocates_revenue_by_executions():
    customer = CustomerFactory(slug="acme")
    subscription_create(customer=customer, plan=per_execution_plan(), start=APRIL_START)
    review = WorkflowFactory(slug="review", model=SONNET)
    classify = WorkflowFactory(slug="classify", model="claude-haiku-4-5")
    for _ in range(3):
        run(customer, review, cost="0.10")
    run(customer, classify, cost="0.90")
    roll_up_usage(full=True)

    report = margin_report(day=date(2025, 4, 15), now=MID_APRIL)

    workflows = {row.key: row for row in report.workflows}
    assert set(workflows) == {"classify", "review"}
    # Revenue 2.00 split 3:1 by executions.
    assert workflows["review"].revenue == D("1.50")
    assert workflows["review"].cost == D("0.30")
    assert workflows["review"].unprofitable is False
    assert workflows["classify"].revenue == D("0.50")
    assert workflows["classify"].cost == D("0.90")
    assert workflows["classify"].unprofitable is True
    models = {row.key: row for row in report.models}
    assert models[SONNET].revenue == D("1.50")
    assert models["claude-haiku-4-5"].cost == D("0.90")


def test_report_orders_customers_by_margin_and_skips_idle():
    good = CustomerFactory(slug="good")
    bad = CustomerFactory(slug="bad")
    CustomerFactory(slug="idle")
    subscription_create(customer=good, plan=per_execution_plan(), start=APRIL_START)
    subscription_create(
        customer=bad, plan=per_execution_plan("0.10"), start=APRIL_START
    )
    workflow = WorkflowFactory(slug="review", model=SONNET)
    run(good, workflow)
    run(bad, workflow)
    roll_up_usage(full=True)

    report = margin_report(day=date(2025, 4, 15), now=MID_APRIL)

    assert [row.customer.slug for row in report.customers] == ["bad", "good"]
