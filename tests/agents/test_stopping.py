"""A run_agent process that is stopped or killed must not leave the CLI spending."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from agents.models import ApiMessage, Execution
from agents.simulator import SimulatorServer
from tests.factories import CustomerFactory, WorkflowFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def simulator():
    with SimulatorServer(stall_seconds=30) as server:
        yield server


def posts(simulator):
    return sum(1 for record in simulator.requests if record.method == "POST")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_signal_stops_cli_and_keeps_usage(simulator, signum):
    customer = CustomerFactory()
    workflow = WorkflowFactory(
        model="claude-sonnet-4-6", allowed_tools=["Read"], max_turns=500
    )
    database = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": (
            f"postgres://{database['USER'] or 'postgres'}@{database['HOST'] or '127.0.0.1'}:"
            f"{database['PORT'] or 5432}/{database['NAME']}"
        ),
        "AGENTMARGIN_TEST_SIMULATOR_URL": simulator.url,
        "AGENTMARGIN_AGENT_CWD": str(settings.AGENTMARGIN_AGENT_CWD),
        "AGENTMARGIN_CLAUDE_CONFIG_DIR": str(settings.AGENTMARGIN_CLAUDE_CONFIG_DIR),
    }
    first_request = len(simulator.requests)
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "run_agent",
            f"--customer={customer.slug}",
            f"--workflow={workflow.slug}",
            "[sim:max-turns] Keep going.",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while ApiMessage.objects.filter(execution__workflow=workflow).count() < 5:
            assert time.monotonic() < deadline, "the run did not get going"
            time.sleep(0.1)
        process.send_signal(signum)
        process.wait(timeout=30)
        time.sleep(1)
        after_stop = posts(simulator)
        time.sleep(3)
        assert posts(simulator) == after_stop, "the CLI went on calling the API"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    execution = Execution.objects.get(workflow=workflow)
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
    if signum == signal.SIGKILL:
        # Nothing can close the execution; the sweeper will.
        assert execution.status == Execution.Status.RUNNING
    else:
        assert execution.status == Execution.Status.INTERRUPTED
        assert execution.finished_at is not None
