"""Executions run by a real Celery worker process over the Redis broker."""

import os
import signal
import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from agents.jobs import execution_enqueue, sweep_executions
from agents.models import ApiMessage, Execution
from agents.services import execution_create
from agents.simulator import SimulatorServer, scenario_usage
from agents.tasks import run_execution
from billing.models import Alert
from tests.agents.workers import CeleryWorker
from tests.factories import CustomerFactory, WorkflowFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SONNET_RATES = ("3", "3.75", "6", "0.30", "15")
USAGE_KEYS = (
    "input_tokens",
    "ephemeral_5m_input_tokens",
    "ephemeral_1h_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
)


def sonnet_cost(turns):
    rates = [Decimal(rate) for rate in SONNET_RATES]
    total = sum(
        turn[key] * rate
        for turn in turns
        for key, rate in zip(USAGE_KEYS, rates, strict=True)
    )
    return total / Decimal(1_000_000)


@pytest.fixture(scope="module")
def simulator():
    with SimulatorServer(stall_seconds=60) as server:
        yield server


@pytest.fixture
def customer():
    return CustomerFactory(slug="acme")


@pytest.fixture
def workflow():
    return WorkflowFactory(
        slug="review", model="claude-sonnet-4-6", allowed_tools=["Read"]
    )


def wait_for(condition, *, timeout=60, interval=0.2, message="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {message}")


def wait_finished(execution, timeout=60):
    def finished():
        execution.refresh_from_db()
        return execution.is_finished

    wait_for(finished, timeout=timeout, message=f"execution {execution.pk} to finish")
    return execution


def test_job_runs_end_to_end(tmp_path, simulator, customer, workflow):
    with CeleryWorker(tmp_path, simulator.url):
        execution = execution_enqueue(
            customer=customer, workflow=workflow, prompt="[sim:multi-block] Review it."
        )
        wait_finished(execution)
    assert execution.status == Execution.Status.SUCCEEDED
    assert execution.simulated
    assert execution.worker
    assert execution.heartbeat_at is not None
    assert execution.cost_usd == sonnet_cost(scenario_usage("multi-block"))


def test_duplicate_delivery_runs_agent_once(tmp_path, simulator, customer, workflow):
    execution = execution_create(
        customer=customer, workflow=workflow, prompt="[sim:default] Hi."
    )
    requests_before = len(simulator.requests)
    with CeleryWorker(tmp_path, simulator.url) as worker:
        run_execution.delay(execution.pk)
        run_execution.delay(execution.pk)
        wait_finished(execution)
        wait_for(
            lambda: worker.log().count("this delivery does nothing") >= 1,
            timeout=20,
            message="the second delivery to be skipped",
        )
    posts = [r for r in simulator.requests[requests_before:] if r.method == "POST"]
    assert len(posts) == 1
    assert execution.status == Execution.Status.SUCCEEDED
    assert ApiMessage.objects.filter(execution=execution).count() == 1


def test_killed_worker_leaves_recorded_usage(
    tmp_path, simulator, customer, workflow, settings
):
    with CeleryWorker(tmp_path, simulator.url, concurrency=1) as worker:
        execution = execution_enqueue(
            customer=customer, workflow=workflow, prompt="[sim:stall] Take your time."
        )
        wait_for(
            lambda: ApiMessage.objects.filter(execution=execution).exists(),
            message="the stalled response to be recorded",
        )
        for pid in worker.pool_pids():
            os.kill(pid, signal.SIGKILL)
        # The worker requeues the lost task; its new pool process must skip it.
        wait_for(
            lambda: "this delivery does nothing" in worker.log(),
            timeout=30,
            message="the redelivered task to be skipped",
        )
    execution.refresh_from_db()
    assert execution.status == Execution.Status.RUNNING

    later = timezone.now() + timedelta(
        seconds=settings.AGENTMARGIN_STALE_AFTER_SECONDS + 1
    )
    result = sweep_executions(now=later)
    execution.refresh_from_db()
    turn = scenario_usage("stall")[0]
    assert result.interrupted == [execution.pk]
    assert execution.status == Execution.Status.INTERRUPTED
    assert execution.api_message_count == 1
    assert ApiMessage.objects.filter(execution=execution).count() == 1
    assert execution.cost_usd == sonnet_cost([{**turn, "output_tokens": 1}])
    assert execution.estimated
    assert (
        Alert.objects.filter(
            execution=execution, kind=Alert.Kind.STALLED_EXECUTION
        ).count()
        == 1
    )
    # A second sweep changes nothing and raises no second alert.
    assert sweep_executions(now=later).interrupted == []
    assert Alert.objects.filter(execution=execution).count() == 1


def test_soft_time_limit_interrupts_stalled_run(
    tmp_path, simulator, customer, workflow
):
    with CeleryWorker(tmp_path, simulator.url, AGENTMARGIN_RUN_TIMEOUT_SECONDS=3):
        execution = execution_enqueue(
            customer=customer, workflow=workflow, prompt="[sim:stall] Wait."
        )
        wait_finished(execution, timeout=60)
    turn = scenario_usage("stall")[0]
    assert execution.status == Execution.Status.INTERRUPTED
    assert execution.cost_usd == sonnet_cost([{**turn, "output_tokens": 1}])


def test_customer_concurrency_limit_holds(tmp_path, simulator, customer, workflow):
    observed = []
    stop = threading.Event()

    def sample():
        try:
            while not stop.is_set():
                observed.append(
                    Execution.objects.filter(
                        customer=customer, status=Execution.Status.RUNNING
                    ).count()
                )
                time.sleep(0.05)
        finally:
            connection.close()

    with CeleryWorker(
        tmp_path, simulator.url, concurrency=3, AGENTMARGIN_CUSTOMER_CONCURRENCY=1
    ):
        sampler = threading.Thread(target=sample)
        sampler.start()
        executions = [
            execution_enqueue(
                customer=customer, workflow=workflow, prompt=f"[sim:tool-loop] Run {n}."
            )
            for n in range(3)
        ]
        try:
            for execution in executions:
                wait_finished(execution, timeout=90)
        finally:
            stop.set()
            sampler.join()
    assert [execution.status for execution in executions] == [
        Execution.Status.SUCCEEDED
    ] * 3
    assert max(observed) == 1
    starts = sorted(execution.started_at for execution in executions)
    finishes = sorted(execution.finished_at for execution in executions)
    # Each run started after the one before it finished.
    assert starts[1] >= finishes[0]
    assert starts[2] >= finishes[1]
