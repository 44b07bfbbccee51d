from datetime import date, timedelta
from decimal import Decimal

import pytest

from agents.models import Workflow
from billing import selectors
from billing.models import DailyUsage, MonthlyUsage
from billing.rollups import roll_up_usage
from billing.selectors import Usage
from customers.models import Customer
from tests.billing.usage import (
    FIELDS,
    HAIKU,
    SONNET,
    UNKNOWN,
    add_message,
    at,
    build_usage,
    expected_period_usage,
    make_execution,
)
from tests.factories import CustomerFactory, WorkflowFactory

pytestmark = pytest.mark.django_db

PERIODS = [
    # Inside one month.
    (date(2025, 11, 3), date(2025, 11, 20)),
    # One whole month.
    (date(2025, 11, 1), date(2025, 12, 1)),
    # Partial month, whole month, partial month, across a new year.
    (date(2025, 11, 17), date(2026, 1, 9)),
    # Whole months only.
    (date(2025, 10, 1), date(2026, 2, 1)),
    # Everything, and beyond.
    (date(2025, 1, 1), date(2027, 1, 1)),
    # A single day, and an empty period.
    (date(2025, 12, 31), date(2026, 1, 1)),
    (date(2025, 12, 31), date(2025, 12, 31)),
]


def figures(usage: Usage) -> dict:
    return {name: getattr(usage, name) for name in FIELDS}


@pytest.fixture
def rolled_up():
    build_usage()
    roll_up_usage()


@pytest.mark.usefixtures("rolled_up")
@pytest.mark.parametrize(("start", "end"), PERIODS)
def test_totals_equal_raw_sums(start, end):
    assert figures(selectors.usage_totals(start=start, end=end)) == (
        expected_period_usage(start, end)
    )


@pytest.mark.usefixtures("rolled_up")
@pytest.mark.parametrize(("start", "end"), PERIODS)
def test_customer_totals_equal_raw_sums(start, end):
    for customer in Customer.objects.all():
        usage = selectors.usage_totals(start=start, end=end, customer=customer)
        assert figures(usage) == expected_period_usage(start, end, customer)


@pytest.mark.usefixtures("rolled_up")
def test_grouped_usage_adds_up_to_totals():
    start, end = date(2025, 11, 17), date(2026, 1, 9)
    total = selectors.usage_totals(start=start, end=end)
    groupings = [
        selectors.usage_by_customer(start=start, end=end),
        selectors.usage_by_workflow(start=start, end=end),
        selectors.usage_by_model(start=start, end=end),
        selectors.usage_by_day(start=start, end=end),
    ]
    for grouped in groupings:
        assert figures(sum(grouped.values(), Usage())) == figures(total)


@pytest.mark.usefixtures("rolled_up")
def test_grouped_usage_keys_and_order():
    start, end = date(2025, 10, 1), date(2026, 3, 1)
    by_customer = selectors.usage_by_customer(start=start, end=end)
    by_workflow = selectors.usage_by_workflow(start=start, end=end)
    by_model = selectors.usage_by_model(start=start, end=end)
    assert all(isinstance(key, Customer) for key in by_customer)
    assert all(isinstance(key, Workflow) for key in by_workflow)
    assert set(by_model) <= {SONNET, HAIKU, UNKNOWN, "claude-opus-4-6"}
    costs = [usage.cost_usd for usage in by_model.values()]
    assert costs == sorted(costs, reverse=True)


@pytest.mark.usefixtures("rolled_up")
def test_usage_by_day_and_month():
    start, end = date(2025, 11, 1), date(2026, 1, 1)
    by_day = selectors.usage_by_day(start=start, end=end)
    assert list(by_day) == sorted(by_day)
    assert min(by_day) >= start
    assert max(by_day) < end
    for day in (min(by_day), max(by_day)):
        assert figures(by_day[day]) == (
            expected_period_usage(day, day + timedelta(days=1))
        )
    by_month = selectors.usage_by_month(start=start, end=end)
    assert list(by_month) == [date(2025, 11, 1), date(2025, 12, 1)]
    assert figures(by_month[date(2025, 12, 1)]) == (
        expected_period_usage(date(2025, 12, 1), date(2026, 1, 1))
    )


def test_whole_months_read_from_monthly_rows():
    customer = CustomerFactory(slug="acme")
    workflow = WorkflowFactory(slug="review", model=SONNET)
    execution = make_execution(customer, workflow, at("2025-11-03T10:00:00"))
    add_message(execution, SONNET, at("2025-11-03T10:01:00"), Decimal("1"))
    roll_up_usage()
    # Tamper with the monthly row alone: only a read of whole months returns it.
    MonthlyUsage.objects.update(cost_usd=Decimal("7"))
    whole = selectors.usage_totals(start=date(2025, 11, 1), end=date(2025, 12, 1))
    partial = selectors.usage_totals(start=date(2025, 11, 2), end=date(2025, 12, 1))
    assert whole.cost_usd == Decimal("7")
    assert partial.cost_usd == Decimal("1")
    assert DailyUsage.objects.get().cost_usd == Decimal("1")


def test_totals_with_no_rows_are_zero():
    usage = selectors.usage_totals(start=date(2025, 1, 1), end=date(2026, 1, 1))
    assert usage == Usage()
    assert usage.cost_complete


def test_usage_flags_unpriced_cost():
    usage = Usage(cost_usd=Decimal("1.5"), unpriced_messages=2)
    assert not usage.cost_complete
    assert (usage + usage).cost_usd == Decimal("3.0")
    assert (usage + usage).unpriced_messages == 4


def test_period_ending_before_start_rejected():
    with pytest.raises(ValueError, match="ends"):
        selectors.usage_totals(start=date(2025, 11, 2), end=date(2025, 11, 1))


def test_rolled_up_until_follows_runs():
    assert selectors.usage_rolled_up_until() is None
    result = roll_up_usage()
    assert selectors.usage_rolled_up_until() == result.high_water_mark
