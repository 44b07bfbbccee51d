"""Budget reservations of runs in a real Celery worker process."""

import os
import signal
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from agents.jobs import execution_enqueue, sweep_executions
from agents.models import ApiMessage, Execution
from agents.simulator import SimulatorServer
from billing.budgets import budget_status
from billing.models import BudgetReservation
from tests.agents.workers import CeleryWorker
from tests.factories import CustomerFactory, WorkflowFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def wait_for(condition, *, timeout=60, message="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {message}")


def test_killed_worker_reservation_released(tmp_path, settings):
    customer = CustomerFactory(slug="capped", monthly_budget_usd=Decimal("5.00"))
    workflow = WorkflowFactory(
        slug="review",
        model="claude-sonnet-4-6",
        allowed_tools=["Read"],
        per_run_budget_usd=Decimal("1.00"),
    )
    with (
        SimulatorServer(stall_seconds=60) as simulator,
        CeleryWorker(tmp_path, simulator.url, concurrency=1) as worker,
    ):
        execution = execution_enqueue(
            customer=customer, workflow=workflow, prompt="[sim:stall] Take your time."
        )
        wait_for(
            lambda: ApiMessage.objects.filter(execution=execution).exists(),
            message="the stalled response to be recorded",
        )
        assert BudgetReservation.objects.get(execution=execution).held
        for pid in worker.pool_pids():
            os.kill(pid, signal.SIGKILL)
        wait_for(
            lambda: "this delivery does nothing" in worker.log(),
            timeout=30,
            message="the redelivered task to be skipped",
        )
    # Until the sweeper runs, the dead run keeps its reservation.
    assert budget_status(customer).spent_usd == Decimal("1.00")

    later = timezone.now() + timedelta(
        seconds=settings.AGENTMARGIN_STALE_AFTER_SECONDS + 1
    )
    sweep_executions(now=later)

    execution.refresh_from_db()
    reservation = BudgetReservation.objects.get(execution=execution)
    assert execution.status == Execution.Status.INTERRUPTED
    assert reservation.released_at is not None
    assert reservation.actual_cost_usd == execution.cost_usd
    assert execution.cost_usd > 0
    assert budget_status(customer).spent_usd == execution.cost_usd
