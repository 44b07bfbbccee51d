"""Canceling a running execution through the API stops the real CLI within seconds.

The run goes through the real SDK and bundled CLI against the local
simulator, in a thread standing in for a Celery worker.
"""

import threading
import time

import pytest
from django.db import connection

from agents.heartbeat import Heartbeat
from agents.jobs import Claim, execution_claim
from agents.models import ApiMessage, Execution
from agents.runner import CANCELED_WHILE_RUNNING, ApiTarget, run_execution
from agents.simulator import SimulatorServer
from tests.factories import ExecutionFactory, WorkflowFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def simulator():
    with SimulatorServer(stall_seconds=30) as server:
        yield server


def posts(simulator):
    return sum(1 for record in simulator.requests if record.method == "POST")


def run_in_thread(execution_id, target, outcome):
    try:
        claim, execution = execution_claim(execution_id, worker="test-worker")
        assert claim is Claim.CLAIMED
        outcome["execution"] = run_execution(
            execution, target=target, timeout_seconds=120
        )
    finally:
        connection.close()


def test_cancel_stops_running_cli(simulator, client, settings, sent_tasks):
    settings.AGENTMARGIN_CANCEL_POLL_SECONDS = 0.5
    WorkflowFactory(
        slug="endless", model="claude-sonnet-4-6", allowed_tools=["Read"], max_turns=500
    )
    target = ApiTarget(
        base_url=simulator.url, api_key="sk-ant-simulator", simulated=True
    )
    response = client.post(
        "/api/v1/executions",
        {"workflow": "endless", "prompt": "[sim:max-turns] Keep going."},
        format="json",
    )
    assert response.status_code == 202
    execution_id = response.json()["id"]
    first_request = len(simulator.requests)
    outcome = {}
    worker = threading.Thread(
        target=run_in_thread, args=(execution_id, target, outcome)
    )
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while ApiMessage.objects.filter(execution_id=execution_id).count() < 3:
            assert time.monotonic() < deadline, "the run did not get going"
            time.sleep(0.1)

        canceled_at = time.monotonic()
        cancel = client.post(f"/api/v1/executions/{execution_id}/cancel")
        assert cancel.status_code == 202
        worker.join(timeout=30)
        assert not worker.is_alive(), "the run did not stop"
        stopped_after = time.monotonic() - canceled_at
        after_stop = posts(simulator)
        time.sleep(2)
        assert posts(simulator) == after_stop, "the CLI went on calling the API"
    finally:
        worker.join(timeout=60)

    execution = Execution.objects.get(pk=execution_id)
    assert execution.status == Execution.Status.INTERRUPTED
    assert execution.error.startswith(CANCELED_WHILE_RUNNING)
    assert execution.finished_at is not None
    assert (
        execution.api_message_count
        == ApiMessage.objects.filter(execution=execution).count()
    )
    assert execution.api_message_count >= 3
    served = {
        record.message_id
        for record in simulator.requests[first_request:]
        if record.message_id
    }
    recorded = set(
        ApiMessage.objects.filter(execution=execution).values_list(
            "message_id", flat=True
        )
    )
    # Every served response was recorded, but for at most the one in flight.
    assert recorded <= served
    assert len(served - recorded) <= 1
    # Poll interval, then the interrupt and the CLI's closing result.
    assert stopped_after < 10


def test_heartbeat_sees_cancel_request(transactional_db):
    execution = ExecutionFactory(status=Execution.Status.RUNNING)
    with Heartbeat(execution.pk, interval=15, cancel_poll_seconds=0.1) as heartbeat:
        assert not heartbeat.cancel_requested.is_set()
        Execution.objects.filter(pk=execution.pk).update(
            cancel_requested_at="2026-01-01T00:00:00Z"
        )
        assert heartbeat.cancel_requested.wait(timeout=5)


def test_heartbeat_sees_earlier_cancel_at_start(transactional_db):
    execution = ExecutionFactory(
        status=Execution.Status.RUNNING, cancel_requested_at="2026-01-01T00:00:00Z"
    )
    with Heartbeat(execution.pk, interval=15, cancel_poll_seconds=5) as heartbeat:
        assert heartbeat.cancel_requested.is_set()
