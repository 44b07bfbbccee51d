"""Alert rules: which apply, when they fire, and once per rule, customer and period."""

import dataclasses
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from agents.models import Execution
from billing.alerting import realtime
from billing.alerting.executions import execution_rules_check, stalled_rules_check
from billing.alerting.periodic import alert_rules_evaluate
from billing.alerting.rules import Crossing, alert_fire, crossings, effective_rules
from billing.models import Alert, AlertRule, MonthlyUsage, Plan
from billing.services import subscription_create
from billing.tasks import evaluate_alert_rules
from config.schedules import SCHEDULES
from tests.billing.usage import at, make_execution
from tests.factories import CustomerFactory, WorkflowFactory

pytestmark = pytest.mark.django_db

DECEMBER = at("2026-12-10T12:00:00")
JANUARY = at("2027-01-10T12:00:00")


@pytest.fixture(autouse=True)
def no_seeded_rules():
    """Start every test without rules, whatever the migrations seeded."""
    AlertRule.objects.all().delete()
    realtime.clear()
    yield
    realtime.clear()


@pytest.fixture
def customer():
    return CustomerFactory(slug="acme")


@pytest.fixture
def workflow():
    return WorkflowFactory(slug="review")


def rule(kind, threshold=None, customer=None, **fields):
    return AlertRule.objects.create(
        kind=kind,
        threshold=None if threshold is None else Decimal(threshold),
        customer=customer,
        **fields,
    )


def month_usage(customer, workflow, month: date, cost: str, unpriced=0, executions=1):
    return MonthlyUsage.objects.create(
        customer=customer,
        workflow=workflow,
        model="claude-sonnet-4-6",
        month=month,
        cost_usd=Decimal(cost),
        unpriced_messages=unpriced,
        api_messages=1,
        executions=executions,
        succeeded=executions,
    )


@dataclasses.dataclass
class Update:
    """The two fields of agents.recorder.MessageUpdate that the check reads."""

    running_cost_usd: Decimal
    unpriced: bool = False


# Rule selection --------------------------------------------------------


def test_customer_rule_replaces_global_of_kind(customer):
    other = CustomerFactory(slug="globex")
    global_cost = rule(AlertRule.Kind.PERIOD_COST, "100")
    global_unpriced = rule(AlertRule.Kind.UNPRICED_USAGE)
    own_cost = rule(AlertRule.Kind.PERIOD_COST, "10", customer=customer)

    assert set(effective_rules(customer.pk)) == {own_cost, global_unpriced}
    assert set(effective_rules(other.pk)) == {global_cost, global_unpriced}


def test_inactive_override_silences_kind(customer):
    rule(AlertRule.Kind.UNPRICED_USAGE)
    rule(AlertRule.Kind.UNPRICED_USAGE, customer=customer, is_active=False)

    assert effective_rules(customer.pk) == []


def test_rule_unique_per_kind_customer_threshold(customer):
    rule(AlertRule.Kind.BUDGET_USED, "80")
    with pytest.raises(IntegrityError), transaction.atomic():
        rule(AlertRule.Kind.BUDGET_USED, "80")
    rule(AlertRule.Kind.BUDGET_USED, "80", customer=customer)
    rule(AlertRule.Kind.UNPRICED_USAGE)
    with pytest.raises(IntegrityError), transaction.atomic():
        rule(AlertRule.Kind.UNPRICED_USAGE)


# One alert per rule, customer and period ----------------------------------


def test_alert_unique_per_rule_customer_period(customer):
    period_cost = rule(AlertRule.Kind.PERIOD_COST, "1")
    crossing = Crossing(period_cost, "Cost is above $1.00.")

    first = alert_fire(
        crossing, customer_id=customer.pk, period_start=date(2026, 12, 1)
    )
    second = alert_fire(
        crossing, customer_id=customer.pk, period_start=date(2026, 12, 1)
    )
    next_period = alert_fire(
        crossing, customer_id=customer.pk, period_start=date(2027, 1, 1)
    )

    assert first is not None
    assert second is None
    assert next_period is not None
    assert Alert.objects.filter(rule=period_cost).count() == 2


@pytest.mark.parametrize(
    ("kind", "threshold", "setup"),
    [
        (AlertRule.Kind.PERIOD_COST, "10", "cost"),
        (AlertRule.Kind.EXECUTION_COST, "5", "costly_execution"),
        (AlertRule.Kind.MARGIN, "50", "cost"),
        (AlertRule.Kind.PROJECTED_MARGIN, "50", "cost"),
        (AlertRule.Kind.BUDGET_USED, "80", "cost"),
        (AlertRule.Kind.SOFT_BUDGET, None, "cost"),
        (AlertRule.Kind.UNPRICED_USAGE, None, "unpriced"),
        (AlertRule.Kind.COST_DIFFERENCE, "10", "difference"),
        (AlertRule.Kind.STALLED_EXECUTIONS, "1", "stalled"),
    ],
)
def test_each_rule_fires_once_per_period(kind, threshold, setup, customer, workflow):
    customer.monthly_budget_usd = Decimal("20.00")
    customer.monthly_soft_budget_usd = Decimal("15.00")
    customer.save()
    plan = Plan.objects.create(
        name="Flat",
        slug="flat",
        billing_model=Plan.BillingModel.SUBSCRIPTION,
        monthly_price=Decimal("30.00"),
    )
    subscription_create(customer=customer, plan=plan, start=date(2026, 12, 1))
    the_rule = rule(kind, threshold)
    for moment in (DECEMBER, JANUARY):
        _make_crossing(setup, customer, workflow, moment)

    alert_rules_evaluate(now=DECEMBER)
    alert_rules_evaluate(now=DECEMBER)
    december = list(Alert.objects.filter(rule=the_rule))
    alert_rules_evaluate(now=JANUARY)
    alert_rules_evaluate(now=JANUARY)
    both = list(Alert.objects.filter(rule=the_rule).order_by("period_start"))

    assert len(december) == 1
    assert december[0].kind == kind
    assert december[0].customer == customer
    assert december[0].period_start == date(2026, 12, 1)
    assert len(both) == 2
    assert both[1].period_start == date(2027, 1, 1)


def _make_crossing(setup, customer, workflow, moment: datetime) -> None:
    """Create usage in the month of `moment` that crosses the rule under test."""
    month = moment.date().replace(day=1)
    if setup == "cost":
        # $18 of cost on $30 of revenue: above $10, 40% margin, 90% of the
        # $20 budget, above the $15 soft budget.
        month_usage(customer, workflow, month, "18")
    elif setup == "unpriced":
        month_usage(customer, workflow, month, "1", unpriced=2)
    elif setup == "costly_execution":
        execution = make_execution(customer, workflow, moment)
        Execution.objects.filter(pk=execution.pk).update(cost_usd=Decimal("7.5"))
    elif setup == "difference":
        execution = make_execution(customer, workflow, moment)
        Execution.objects.filter(pk=execution.pk).update(
            cost_usd=Decimal("1.20"),
            reported_cost_usd=Decimal("1.00"),
            cost_difference_usd=Decimal("0.20"),
        )
    elif setup == "stalled":
        execution = make_execution(customer, workflow, moment)
        alert = Alert.objects.create(
            kind=Alert.Kind.STALLED_EXECUTION,
            customer=customer,
            execution=execution,
            message="Stalled.",
            dedupe_key=f"stalled_execution:{execution.pk}",
        )
        Alert.objects.filter(pk=alert.pk).update(created_at=moment)


def test_rule_below_threshold_stays_quiet(customer, workflow):
    rule(AlertRule.Kind.PERIOD_COST, "10")
    rule(AlertRule.Kind.BUDGET_USED, "100")
    rule(AlertRule.Kind.UNPRICED_USAGE)
    customer.monthly_budget_usd = Decimal("20.00")
    customer.save()
    month_usage(customer, workflow, date(2026, 12, 1), "9.99")

    result = alert_rules_evaluate(now=DECEMBER)

    assert result.raised == []
    assert not Alert.objects.exists()


def test_budget_levels_fire_separately(customer, workflow):
    levels = {
        level: rule(AlertRule.Kind.BUDGET_USED, level) for level in ("50", "80", "100")
    }
    customer.monthly_budget_usd = Decimal("10.00")
    customer.save()
    usage = month_usage(customer, workflow, date(2026, 12, 1), "5.00")

    alert_rules_evaluate(now=DECEMBER)
    fired_at_half = set(Alert.objects.values_list("rule_id", flat=True))
    usage.cost_usd = Decimal("10.00")
    usage.save()
    alert_rules_evaluate(now=DECEMBER)
    fired_at_full = set(Alert.objects.values_list("rule_id", flat=True))

    assert fired_at_half == {levels["50"].pk}
    assert fired_at_full == {rule.pk for rule in levels.values()}


def test_alert_names_execution_and_amounts(customer, workflow):
    rule(AlertRule.Kind.EXECUTION_COST, "5")
    execution = make_execution(customer, workflow, DECEMBER)
    Execution.objects.filter(pk=execution.pk).update(cost_usd=Decimal("7.5"))

    alert_rules_evaluate(now=DECEMBER)

    alert = Alert.objects.get()
    assert alert.execution_id == execution.pk
    assert alert.message == (
        f"Execution {execution.pk} cost $7.50, above the limit of $5.00 for one "
        "execution."
    )


# Real-time check --------------------------------------------------------


def test_realtime_check_fires_on_crossing(customer, workflow, settings):
    settings.AGENTMARGIN_ALERT_CACHE_SECONDS = 300
    period_cost = rule(AlertRule.Kind.PERIOD_COST, "5")
    execution_cost = rule(AlertRule.Kind.EXECUTION_COST, "3")
    earlier = make_execution(customer, workflow, datetime.now(UTC))
    Execution.objects.filter(pk=earlier.pk).update(cost_usd=Decimal("4.00"))
    running = make_execution(customer, workflow, datetime.now(UTC))

    def record(cost: str, **fields):
        realtime.on_api_message_recorded(
            Execution,
            execution_id=running.pk,
            customer_id=customer.pk,
            update=Update(Decimal(cost), **fields),
        )

    record("0.50")
    assert not Alert.objects.exists()
    record("1.20")
    assert list(Alert.objects.values_list("rule_id", flat=True)) == [period_cost.pk]
    record("3.50")
    assert set(Alert.objects.values_list("rule_id", flat=True)) == {
        period_cost.pk,
        execution_cost.pk,
    }
    assert Alert.objects.get(rule=execution_cost).execution_id == running.pk
    record("9.00")
    assert Alert.objects.count() == 2


def test_realtime_check_queries_once_per_ttl(
    customer, workflow, settings, django_assert_num_queries
):
    settings.AGENTMARGIN_ALERT_CACHE_SECONDS = 300
    rule(AlertRule.Kind.PERIOD_COST, "100")
    rule(AlertRule.Kind.BUDGET_USED, "80")
    rule(AlertRule.Kind.UNPRICED_USAGE)
    customer.monthly_budget_usd = Decimal("200")
    customer.save()
    running = make_execution(customer, workflow, datetime.now(UTC))

    def record(cost: str):
        realtime.on_api_message_recorded(
            Execution,
            execution_id=running.pk,
            customer_id=customer.pk,
            update=Update(Decimal(cost)),
        )

    record("0.01")
    with django_assert_num_queries(0):
        for step in range(1, 200):
            record(str(Decimal("0.01") * step))
    assert not Alert.objects.exists()


def test_realtime_check_without_rules_is_quiet(
    customer, workflow, django_assert_max_num_queries
):
    running = make_execution(customer, workflow, datetime.now(UTC))
    with django_assert_max_num_queries(4):
        for _ in range(50):
            realtime.on_api_message_recorded(
                Execution,
                execution_id=running.pk,
                customer_id=customer.pk,
                update=Update(Decimal("99"), unpriced=True),
            )
    assert not Alert.objects.exists()


def test_realtime_unpriced_and_soft_budget(customer, workflow, settings):
    settings.AGENTMARGIN_ALERT_CACHE_SECONDS = 300
    unpriced = rule(AlertRule.Kind.UNPRICED_USAGE)
    soft = rule(AlertRule.Kind.SOFT_BUDGET)
    customer.monthly_soft_budget_usd = Decimal("1.00")
    customer.save()
    running = make_execution(customer, workflow, datetime.now(UTC))

    realtime.on_api_message_recorded(
        Execution,
        execution_id=running.pk,
        customer_id=customer.pk,
        update=Update(Decimal("0.40"), unpriced=True),
    )
    realtime.on_api_message_recorded(
        Execution,
        execution_id=running.pk,
        customer_id=customer.pk,
        update=Update(Decimal("1.00")),
    )

    assert set(Alert.objects.values_list("rule_id", flat=True)) == {
        unpriced.pk,
        soft.pk,
    }


# Each case: the rule, the watch's base figures, and the running cost of the
# execution at which the rule's condition becomes true ("at" means it is
# true from that cost on, "above" only past it).
TRIGGER_CASES = [
    pytest.param(
        AlertRule.Kind.PERIOD_COST, "10", {"other": "4"}, "6", "above", id="period"
    ),
    pytest.param(
        AlertRule.Kind.EXECUTION_COST, "3", {"other": "4"}, "3", "above", id="execution"
    ),
    pytest.param(
        AlertRule.Kind.BUDGET_USED,
        "80",
        {"other": "1", "hard": "20"},
        "15",
        "at",
        id="budget-used",
    ),
    pytest.param(
        AlertRule.Kind.SOFT_BUDGET,
        None,
        {"other": "2", "soft": "7"},
        "5",
        "at",
        id="soft",
    ),
    # Revenue 30, other cost 3, margin below 25%: the period cost must pass
    # 22.50, so the execution's cost must pass 19.50.
    pytest.param(
        AlertRule.Kind.MARGIN,
        "25",
        {"other": "3", "revenue": "30"},
        "19.5",
        "above",
        id="margin",
    ),
    # A threshold whose share of the revenue has six decimals: 33.333% of
    # 0.7 is 0.233331.
    pytest.param(
        AlertRule.Kind.MARGIN,
        "33.333",
        {"other": "0.1", "revenue": "0.7"},
        "0.3666690",
        "above",
        id="margin-uneven",
    ),
]


def watch_for(rule_obj, other="0", hard=None, soft=None, revenue=None):
    return realtime.Watch(
        customer_id=1,
        period_start=date(2026, 12, 1),
        loaded_at=0.0,
        rules=[rule_obj],
        other_cost_usd=Decimal(other),
        hard_budget_usd=None if hard is None else Decimal(hard),
        soft_budget_usd=None if soft is None else Decimal(soft),
        revenue_usd=None if revenue is None else Decimal(revenue),
        fired=set(),
    )


@pytest.mark.parametrize("kind, threshold, base, crossing, side", TRIGGER_CASES)
def test_trigger_never_skips_a_crossing(kind, threshold, base, crossing, side):
    """No rule fires below the watch's trigger cost, and the rule fires past its crossing."""
    unsaved = AlertRule(
        pk=1, kind=kind, threshold=None if threshold is None else Decimal(threshold)
    )
    watch = watch_for(unsaved, **base)
    crossing = Decimal(crossing)
    tiny = Decimal("0.0000000001")

    def holds(cost: Decimal) -> bool:
        return bool(crossings([unsaved], watch.figures(7, cost, False)))

    assert watch.trigger_cost_usd <= crossing
    # The trigger sits just below the crossing, not far below it.
    assert crossing - watch.trigger_cost_usd <= Decimal("0.00001")
    for cost in (Decimal(0), crossing - Decimal("0.01"), crossing - tiny):
        assert not holds(cost), cost
    assert holds(crossing) == (side == "at")
    assert holds(crossing + Decimal("0.00001"))
    # Every cost at which the rule fires is at or above the trigger.
    for cost in (crossing, crossing + tiny, crossing + 1):
        if holds(cost):
            assert cost >= watch.trigger_cost_usd


def test_trigger_of_rules_that_cannot_fire():
    no_budget = AlertRule(pk=1, kind=AlertRule.Kind.BUDGET_USED, threshold=Decimal(50))
    no_revenue = AlertRule(pk=2, kind=AlertRule.Kind.MARGIN, threshold=Decimal(20))
    no_soft = AlertRule(pk=3, kind=AlertRule.Kind.SOFT_BUDGET)
    unpriced = AlertRule(pk=4, kind=AlertRule.Kind.UNPRICED_USAGE)
    for unsaved in (no_budget, no_revenue, no_soft):
        assert watch_for(unsaved).trigger_cost_usd == realtime.INFINITY
    watch = watch_for(unpriced)
    assert watch.trigger_cost_usd == realtime.INFINITY
    assert watch.watches_unpriced
    # A loss-making period (negative revenue) is checked on every message.
    assert watch_for(no_revenue, revenue="-5").trigger_cost_usd == -realtime.INFINITY


def test_trigger_rises_after_a_rule_fires(customer, workflow, settings):
    settings.AGENTMARGIN_ALERT_CACHE_SECONDS = 300
    low = rule(AlertRule.Kind.EXECUTION_COST, "1")
    high = rule(AlertRule.Kind.EXECUTION_COST, "5")
    running = make_execution(customer, workflow, datetime.now(UTC))

    def record(cost: str):
        realtime.on_api_message_recorded(
            Execution,
            execution_id=running.pk,
            customer_id=customer.pk,
            update=Update(Decimal(cost)),
        )

    record("0.5")
    watch = realtime._watches[running.pk]
    assert watch.trigger_cost_usd < Decimal(1)
    record("2")
    assert set(Alert.objects.values_list("rule_id", flat=True)) == {low.pk}
    assert Decimal(1) < watch.trigger_cost_usd < Decimal(5)
    record("6")
    assert set(Alert.objects.values_list("rule_id", flat=True)) == {low.pk, high.pk}
    assert watch.trigger_cost_usd == realtime.INFINITY


def test_finish_check_compares_sdk_cost(customer, workflow):
    difference = rule(AlertRule.Kind.COST_DIFFERENCE, "5")
    close = make_execution(customer, workflow, datetime.now(UTC))
    Execution.objects.filter(pk=close.pk).update(
        cost_usd=Decimal("1.04"),
        reported_cost_usd=Decimal("1.00"),
        cost_difference_usd=Decimal("0.04"),
    )
    far = make_execution(customer, workflow, datetime.now(UTC))
    Execution.objects.filter(pk=far.pk).update(
        cost_usd=Decimal("0.90"),
        reported_cost_usd=Decimal("1.00"),
        cost_difference_usd=Decimal("-0.10"),
    )

    assert execution_rules_check(close.pk) == []
    raised = execution_rules_check(far.pk)

    assert [alert.rule for alert in raised] == [difference]
    assert raised[0].execution_id == far.pk
    assert "by 10.00%" in raised[0].message


def test_stalled_rule_counts_stall_alerts(customer, workflow):
    stalled = rule(AlertRule.Kind.STALLED_EXECUTIONS, "2")
    for _ in range(2):
        execution = make_execution(customer, workflow, datetime.now(UTC))
        Alert.objects.create(
            kind=Alert.Kind.STALLED_EXECUTION,
            customer=customer,
            execution=execution,
            message="Stalled.",
            dedupe_key=f"stalled_execution:{execution.pk}",
        )
        raised = stalled_rules_check(customer.pk)

    assert [alert.rule for alert in raised] == [stalled]
    assert raised[0].message == "2 executions stalled this billing period."


def test_rule_threshold_required_by_kind(customer):
    with pytest.raises(ValidationError, match="needs a threshold"):
        AlertRule(kind=AlertRule.Kind.PERIOD_COST).full_clean()
    with pytest.raises(ValidationError, match="takes no threshold"):
        AlertRule(
            kind=AlertRule.Kind.UNPRICED_USAGE, threshold=Decimal("1")
        ).full_clean()
    AlertRule(kind=AlertRule.Kind.UNPRICED_USAGE, customer=customer).full_clean()


def test_evaluation_scheduled():
    tasks = {entry["task"]: entry["every_seconds"] for entry in SCHEDULES}

    assert tasks["billing.tasks.evaluate_alert_rules"] == 300


def test_evaluation_task_reports_work(customer, workflow):
    rule(AlertRule.Kind.PERIOD_COST, "1")
    month_usage(customer, workflow, datetime.now(UTC).date().replace(day=1), "2.50")

    summary = evaluate_alert_rules.apply().get()

    assert summary["customers"] == 1
    assert summary["raised"] == list(Alert.objects.values_list("pk", flat=True))
    assert len(summary["raised"]) == 1
    assert summary["reservations_released"] == 0
