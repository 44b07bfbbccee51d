from datetime import date
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from agents.models import Execution
from billing import plans
from billing.models import Plan, Subscription, SubscriptionChange
from billing.services import (
    execution_record_outcome,
    subscription_change_plan,
    subscription_create,
)
from tests.factories import CustomerFactory, ExecutionFactory

pytestmark = pytest.mark.django_db

D = Decimal


def make_plan(slug, billing_model, **fields) -> Plan:
    plan = Plan(name=slug.title(), slug=slug, billing_model=billing_model, **fields)
    plan.full_clean()
    plan.save()
    return plan


def plan_errors(**fields) -> dict:
    plan = Plan(name="Plan", slug="plan", **fields)
    with pytest.raises(ValidationError) as raised:
        plan.full_clean()
    return raised.value.message_dict


# Plan validation ----------------------------------------------------------


def test_valid_plan_of_each_billing_model():
    make_plan("basic", "subscription", monthly_price=D("49.00"))
    make_plan(
        "metered", "usage", usage_pricing="per_execution", price_per_execution=D("0.25")
    )
    make_plan("cost-plus", "usage", usage_pricing="cost_plus", cost_markup=D("1.5"))
    make_plan(
        "commission",
        "success_fee",
        success_fee_kind="commission",
        commission_percent=D("2"),
        minimum_monthly_fee=D("25.00"),
    )
    make_plan(
        "fixed-fee", "success_fee", success_fee_kind="fixed_fee", fee_per_success=D("3")
    )
    make_plan(
        "hybrid",
        "hybrid",
        monthly_price=D("49.00"),
        included_executions=50,
        overage_price=D("0.50"),
    )
    make_plan(
        "tiered",
        "hybrid",
        monthly_price=D("20.00"),
        included_executions=10,
        overage_tiers=[
            {"up_to": 100, "unit_price": "0.50"},
            {"up_to": None, "unit_price": "0.40"},
        ],
    )
    assert Plan.objects.count() == 7


def test_subscription_plan_requires_monthly_price():
    errors = plan_errors(billing_model="subscription")
    assert errors == {"monthly_price": ["Required for Subscription plans."]}


def test_subscription_plan_rejects_other_model_fields():
    errors = plan_errors(
        billing_model="subscription", monthly_price=D("10"), commission_percent=D("2")
    )
    assert set(errors) == {"commission_percent"}
    assert "Subscription plans do not use it" in errors["commission_percent"][0]


def test_negative_monthly_price_rejected():
    errors = plan_errors(billing_model="subscription", monthly_price=D("-1"))
    assert errors == {"monthly_price": ["Must be zero or more, not -1."]}


def test_usage_plan_requires_pricing_choice():
    errors = plan_errors(billing_model="usage")
    assert errors == {"usage_pricing": ["Choose per-execution or cost-plus pricing."]}


def test_usage_per_execution_requires_price():
    errors = plan_errors(billing_model="usage", usage_pricing="per_execution")
    assert errors == {"price_per_execution": ["Required for per-execution pricing."]}


def test_usage_cost_plus_rejects_both_prices():
    errors = plan_errors(
        billing_model="usage",
        usage_pricing="cost_plus",
        cost_markup=D("1.2"),
        price_per_execution=D("0.10"),
    )
    assert errors == {
        "price_per_execution": ["Leave this empty for cost-plus pricing."]
    }


def test_cost_markup_must_be_positive():
    errors = plan_errors(
        billing_model="usage", usage_pricing="cost_plus", cost_markup=D("0")
    )
    assert errors == {"cost_markup": ["Must be above zero, not 0."]}


def test_commission_percent_range():
    errors = plan_errors(
        billing_model="success_fee",
        success_fee_kind="commission",
        commission_percent=D("150"),
    )
    assert errors == {
        "commission_percent": ["Must be above 0 and at most 100, not 150."]
    }


def test_fixed_fee_requires_fee():
    errors = plan_errors(billing_model="success_fee", success_fee_kind="fixed_fee")
    assert errors == {"fee_per_success": ["Required for a fixed fee per success."]}


def test_success_fee_requires_kind():
    errors = plan_errors(billing_model="success_fee", minimum_monthly_fee=D("5"))
    assert errors == {
        "success_fee_kind": ["Choose a commission or a fixed fee per success."]
    }


def test_hybrid_requires_base_included_and_overage():
    errors = plan_errors(billing_model="hybrid")
    assert set(errors) == {"monthly_price", "included_executions", "overage_price"}


def test_hybrid_rejects_overage_price_with_tiers():
    errors = plan_errors(
        billing_model="hybrid",
        monthly_price=D("20"),
        included_executions=0,
        overage_price=D("0.5"),
        overage_tiers=[{"up_to": None, "unit_price": "0.40"}],
    )
    assert set(errors) == {"overage_price"}


@pytest.mark.parametrize(
    ("tiers", "message"),
    [
        ([], "Must be a non-empty list"),
        ({"up_to": None}, "Must be a non-empty list"),
        ([{"up_to": None}], "Tier 1: must have exactly the keys"),
        (
            [{"up_to": 100, "unit_price": "0.5"}, {"up_to": 50, "unit_price": "0.4"}],
            "Tier 2: up_to must be above 100, not 50",
        ),
        ([{"up_to": 0, "unit_price": "0.5"}], "Tier 1: up_to must be above 0, not 0"),
        (
            [
                {"up_to": None, "unit_price": "0.5"},
                {"up_to": None, "unit_price": "0.4"},
            ],
            "Tier 1: only the last tier may have no up_to limit",
        ),
        (
            [{"up_to": 100, "unit_price": "0.5"}],
            "Tier 1: the last tier must have up_to null",
        ),
        ([{"up_to": None, "unit_price": "0"}], "Tier 1: unit_price must be a positive"),
        (
            [{"up_to": None, "unit_price": "-1"}],
            "Tier 1: unit_price must be a positive",
        ),
        ([{"up_to": None, "unit_price": 0.5}], "Tier 1: unit_price must be a positive"),
        (
            [{"up_to": None, "unit_price": "abc"}],
            "Tier 1: unit_price must be a positive",
        ),
        (
            [{"up_to": "10", "unit_price": "1"}, {"up_to": None, "unit_price": "1"}],
            "Tier 1: up_to must be a whole number",
        ),
    ],
)
def test_invalid_overage_tiers(tiers, message):
    assert plans.tier_validation_error(tiers).startswith(message)
    errors = plan_errors(
        billing_model="hybrid",
        monthly_price=D("20"),
        included_executions=10,
        overage_tiers=tiers,
    )
    if tiers:
        assert errors["overage_tiers"][0].startswith(message)


def test_split_into_graduated_tiers():
    tiers = plans.parse_tiers(
        [{"up_to": 100, "unit_price": "0.50"}, {"up_to": None, "unit_price": "0.40"}]
    )
    assert plans.split_into_tiers(150, tiers) == [(tiers[0], 100), (tiers[1], 50)]
    assert plans.split_into_tiers(100, tiers) == [(tiers[0], 100)]
    assert plans.split_into_tiers(1, tiers) == [(tiers[0], 1)]
    assert plans.split_into_tiers(0, tiers) == []


def test_check_constraint_rejects_commission_above_100():
    with pytest.raises(IntegrityError), transaction.atomic():
        Plan.objects.create(
            name="Bad",
            slug="bad",
            billing_model="success_fee",
            success_fee_kind="commission",
            commission_percent=D("150"),
        )


def test_check_constraint_requires_monthly_price():
    with pytest.raises(IntegrityError), transaction.atomic():
        Plan.objects.create(name="Bad", slug="bad", billing_model="hybrid")


# Periods ---------------------------------------------------------------


def test_january_31_anchor_renews_at_month_ends():
    anchor = date(2025, 1, 31)
    assert plans.add_months(anchor, 1) == date(2025, 2, 28)
    assert plans.add_months(anchor, 2) == date(2025, 3, 31)
    assert plans.add_months(anchor, 3) == date(2025, 4, 30)
    assert plans.add_months(anchor, 12) == date(2026, 1, 31)
    assert plans.add_months(date(2024, 1, 31), 1) == date(2024, 2, 29)


def test_period_containing_january_31_anchor():
    anchor = date(2025, 1, 31)
    assert plans.period_containing(anchor, anchor) == (
        date(2025, 1, 31),
        date(2025, 2, 28),
    )
    assert plans.period_containing(anchor, date(2025, 2, 27)) == (
        date(2025, 1, 31),
        date(2025, 2, 28),
    )
    assert plans.period_containing(anchor, date(2025, 2, 28)) == (
        date(2025, 2, 28),
        date(2025, 3, 31),
    )
    assert plans.period_containing(anchor, date(2025, 3, 30)) == (
        date(2025, 2, 28),
        date(2025, 3, 31),
    )
    assert plans.period_containing(anchor, date(2025, 3, 31)) == (
        date(2025, 3, 31),
        date(2025, 4, 30),
    )
    assert plans.period_containing(anchor, date(2025, 12, 31)) == (
        date(2025, 12, 31),
        date(2026, 1, 31),
    )


def test_period_before_anchor_rejected():
    with pytest.raises(ValueError, match="before the anchor"):
        plans.period_containing(date(2025, 1, 31), date(2025, 1, 30))


def test_periods_between_stops_at_open_period():
    periods = plans.periods_between(
        date(2025, 1, 31), date(2025, 1, 31), date(2025, 4, 29)
    )
    assert periods == [
        (date(2025, 1, 31), date(2025, 2, 28)),
        (date(2025, 2, 28), date(2025, 3, 31)),
    ]


# Subscriptions -----------------------------------------------------------


@pytest.fixture
def basic():
    return make_plan("basic", "subscription", monthly_price=D("49.00"))


@pytest.fixture
def pro():
    return make_plan("pro", "subscription", monthly_price=D("99.00"))


def test_subscription_create_sets_first_period(basic):
    subscription = subscription_create(
        customer=CustomerFactory(), plan=basic, start=date(2025, 1, 31)
    )
    assert subscription.status == Subscription.Status.ACTIVE
    assert subscription.current_period_start == date(2025, 1, 31)
    assert subscription.current_period_end == date(2025, 2, 28)


def test_subscription_create_rejects_second_open_subscription(basic):
    customer = CustomerFactory()
    subscription_create(customer=customer, plan=basic, start=date(2025, 1, 1))
    with pytest.raises(ValidationError, match="already has a subscription"):
        subscription_create(customer=customer, plan=basic, start=date(2025, 2, 1))


def test_subscription_create_rejects_inactive_plan(basic):
    basic.is_active = False
    basic.save()
    with pytest.raises(ValidationError, match="inactive"):
        subscription_create(
            customer=CustomerFactory(), plan=basic, start=date(2025, 1, 1)
        )


def test_change_without_proration_waits_for_next_period(basic, pro):
    subscription = subscription_create(
        customer=CustomerFactory(), plan=basic, start=date(2025, 2, 1)
    )
    change = subscription_change_plan(
        subscription=subscription, plan=pro, prorate=False, at=date(2025, 2, 11)
    )
    assert change.effective_on == date(2025, 3, 1)
    assert change.proration_credit == 0
    assert change.proration_charge == 0
    assert plans.plan_on(subscription, date(2025, 2, 28)) == basic
    assert plans.plan_on(subscription, date(2025, 3, 1)) == pro


def test_change_with_proration_by_days(basic, pro):
    subscription = subscription_create(
        customer=CustomerFactory(), plan=basic, start=date(2025, 2, 1)
    )
    change = subscription_change_plan(
        subscription=subscription, plan=pro, prorate=True, at=date(2025, 2, 11)
    )
    # February 2025 has 28 days; from Feb 11 to Mar 1 remain 18.
    # Credit: -49.00 * 18 / 28 = -31.50. Charge: 99.00 * 18 / 28 = 63.642857... -> 63.64.
    assert change.effective_on == date(2025, 2, 11)
    assert change.remaining_days == 18
    assert change.proration_credit == D("-31.50")
    assert change.proration_charge == D("63.64")
    assert plans.plan_on(subscription, date(2025, 2, 10)) == basic
    assert plans.plan_on(subscription, date(2025, 2, 11)) == pro
    subscription.refresh_from_db()
    assert subscription.plan == pro


def test_change_to_same_plan_rejected(basic):
    subscription = subscription_create(
        customer=CustomerFactory(), plan=basic, start=date(2025, 2, 1)
    )
    with pytest.raises(ValidationError, match="already on plan basic"):
        subscription_change_plan(
            subscription=subscription, plan=basic, prorate=True, at=date(2025, 2, 5)
        )
    assert not SubscriptionChange.objects.exists()


def test_change_before_start_rejected(basic, pro):
    subscription = subscription_create(
        customer=CustomerFactory(), plan=basic, start=date(2025, 2, 1)
    )
    with pytest.raises(ValidationError, match="before the subscription started"):
        subscription_change_plan(
            subscription=subscription, plan=pro, prorate=False, at=date(2025, 1, 5)
        )


# Outcomes --------------------------------------------------------------


def test_record_outcome_on_finished_execution():
    execution = ExecutionFactory(status=Execution.Status.SUCCEEDED)
    execution_record_outcome(execution=execution, value_usd=D("500.00"))
    execution.refresh_from_db()
    assert execution.outcome_value_usd == D("500.00")


def test_record_outcome_rejects_negative_value():
    execution = ExecutionFactory(status=Execution.Status.SUCCEEDED)
    with pytest.raises(ValidationError, match="Must be zero or more"):
        execution_record_outcome(execution=execution, value_usd=D("-0.01"))


def test_record_outcome_rejects_float():
    execution = ExecutionFactory(status=Execution.Status.SUCCEEDED)
    with pytest.raises(ValidationError, match="finite Decimal"):
        execution_record_outcome(execution=execution, value_usd=1.5)


def test_record_outcome_rejects_running_execution():
    execution = ExecutionFactory(status=Execution.Status.RUNNING)
    with pytest.raises(ValidationError, match="once it has finished"):
        execution_record_outcome(execution=execution, value_usd=D("10"))
    execution.refresh_from_db()
    assert execution.outcome_value_usd is None


# Admin ------------------------------------------------------------------


def test_plan_admin_shows_field_error(admin_client):
    response = admin_client.post(
        "/admin/billing/plan/add/",
        {
            "name": "Hybrid",
            "slug": "hybrid",
            "currency": "usd",
            "is_active": "on",
            "billing_model": "hybrid",
            "monthly_price": "49.00",
            "overage_tiers": "[]",
        },
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors["included_executions"] == ["Required for Hybrid plans."]
    assert not Plan.objects.exists()


def test_subscription_admin_creates_through_service(admin_client, basic):
    customer = CustomerFactory()
    response = admin_client.post(
        "/admin/billing/subscription/add/",
        {
            "customer": customer.pk,
            "plan": basic.pk,
            "started_on": "2025-01-31",
            "changes-TOTAL_FORMS": "0",
            "changes-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302
    subscription = Subscription.objects.get(customer=customer)
    assert subscription.current_period_end == date(2025, 2, 28)


def test_statement_admin_is_read_only(admin_client):
    response = admin_client.get("/admin/billing/periodstatement/add/")
    assert response.status_code == 403


def test_record_outcome_rejects_fractions_of_a_cent():
    execution = ExecutionFactory(status=Execution.Status.SUCCEEDED)
    with pytest.raises(ValidationError, match="2 decimal places"):
        execution_record_outcome(execution=execution, value_usd=D("1.005"))
