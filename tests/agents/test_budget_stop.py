"""Runs stopped at their budget, through the real SDK and CLI against the simulator.

Expected costs come from the published Sonnet rates, not from the
pricing engine.
"""

import time
from decimal import Decimal

import pytest

from agents.models import ApiMessage, Execution
from agents.runner import ApiTarget, build_options, run_execution
from agents.simulator import SimulatorServer, scenario_usage
from billing.models import Alert, AlertRule, BudgetReservation
from tests.agents.scripted_cost import expected_cost
from tests.factories import CustomerFactory, ExecutionFactory, WorkflowFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def simulator():
    with SimulatorServer(stall_seconds=40) as server:
        yield server


@pytest.fixture
def target(simulator):
    return ApiTarget(base_url=simulator.url, api_key="sk-ant-simulator", simulated=True)


def posts(simulator) -> int:
    return sum(1 for record in simulator.requests if record.method == "POST")


def make_execution(scenario, *, per_run_budget=None, customer=None):
    workflow = WorkflowFactory(
        slug="review",
        model="claude-sonnet-4-6",
        allowed_tools=["Read"],
        per_run_budget_usd=per_run_budget,
    )
    return ExecutionFactory(
        customer=customer or CustomerFactory(slug="acme"),
        workflow=workflow,
        prompt=f"[sim:{scenario}] Look at the notes.",
        max_turns=6,
    )


def test_budget_stop_after_several_turns(target):
    # Turn 1 of tool-loop costs $0.01359. Turn 2's input, priced when it
    # starts streaming, takes the run past $0.015.
    execution = make_execution("tool-loop", per_run_budget=Decimal("0.015"))

    execution = run_execution(execution, target=target, timeout_seconds=60)

    rows = list(ApiMessage.objects.filter(execution=execution))
    turns = scenario_usage("tool-loop")
    assert execution.status == Execution.Status.BUDGET_EXCEEDED
    assert 2 <= len(rows) < len(turns)
    assert execution.api_message_count == len(rows)
    assert execution.cost_usd == sum(row.cost_usd for row in rows)
    assert execution.cost_usd > Decimal("0.015")
    assert execution.cost_usd < expected_cost("claude-sonnet-4-6", turns)
    assert rows[0].cost_usd == expected_cost("claude-sonnet-4-6", turns[:1])
    assert "above the run's budget of $0.015" in execution.error
    assert execution.finished_at is not None


def test_budget_stop_mid_response(target):
    # The stalled response never finishes on its own; its message_start
    # alone costs $0.010695, so only the interrupt can end the run soon.
    execution = make_execution("stall", per_run_budget=Decimal("0.01"))
    started = time.monotonic()

    execution = run_execution(execution, target=target, timeout_seconds=60)

    elapsed = time.monotonic() - started
    turn = scenario_usage("stall")[0]
    assert execution.status == Execution.Status.BUDGET_EXCEEDED
    # The simulator keeps the response open for 40 s.
    assert elapsed < 20
    assert execution.api_message_count == 1
    assert execution.cost_usd == expected_cost(
        "claude-sonnet-4-6", [{**turn, "output_tokens": 1}]
    )


def test_customer_budget_limits_run(target, settings):
    # No per-run budget: the default reservation is the run's limit.
    settings.AGENTMARGIN_DEFAULT_RUN_RESERVATION_USD = Decimal("0.015")
    customer = CustomerFactory(slug="capped", monthly_budget_usd=Decimal("5.00"))
    execution = make_execution("tool-loop", customer=customer)

    execution = run_execution(execution, target=target, timeout_seconds=60)

    reservation = BudgetReservation.objects.get(execution=execution)
    assert execution.status == Execution.Status.BUDGET_EXCEEDED
    assert execution.cost_usd > Decimal("0.015")
    assert reservation.amount_usd == Decimal("0.015")
    assert reservation.released_at is not None
    assert reservation.actual_cost_usd == execution.cost_usd


def test_rejected_run_never_calls_api(target, simulator):
    customer = CustomerFactory(slug="spent", monthly_budget_usd=Decimal("1.00"))
    ExecutionFactory(
        customer=customer,
        workflow=WorkflowFactory(slug="earlier"),
        status=Execution.Status.SUCCEEDED,
        cost_usd=Decimal("0.99"),
    )
    execution = make_execution(
        "default", per_run_budget=Decimal("0.05"), customer=customer
    )
    before = posts(simulator)

    execution = run_execution(execution, target=target, timeout_seconds=60)

    execution.refresh_from_db()
    assert execution.status == Execution.Status.BUDGET_EXCEEDED
    assert execution.started_at is None
    assert execution.api_message_count == 0
    assert "is 99% used" in execution.error
    assert posts(simulator) == before
    assert not BudgetReservation.objects.filter(execution=execution).exists()


def test_sdk_gets_run_budget(target):
    execution = make_execution("default", per_run_budget=Decimal("0.50"))

    assert build_options(execution, target).max_budget_usd == 0.5
    smaller = build_options(execution, target, budget_usd=Decimal("0.015"))
    assert smaller.max_budget_usd == 0.015


def test_alert_raised_while_run_records(target):
    customer = CustomerFactory(slug="watched")
    rule = AlertRule.objects.create(
        kind=AlertRule.Kind.EXECUTION_COST,
        customer=customer,
        threshold=Decimal("0.015"),
    )
    execution = make_execution("tool-loop", customer=customer)

    execution = run_execution(execution, target=target, timeout_seconds=60)

    alert = Alert.objects.get(rule=rule)
    assert execution.status == Execution.Status.SUCCEEDED
    assert alert.execution_id == execution.pk
    assert alert.customer_id == customer.pk
    # Raised by the check on the recording path, before the run ended.
    assert alert.created_at < execution.finished_at
