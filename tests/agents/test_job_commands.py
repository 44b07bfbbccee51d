import json
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from agents.models import ApiMessage, Execution
from billing.models import Alert
from config.celery import app as celery_app
from config.schedules import SCHEDULES
from tests.factories import CustomerFactory, ExecutionFactory, WorkflowFactory

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args):
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.fixture
def queue():
    """The test run's own Celery queue, emptied before and after."""
    name = celery_app.conf.task_default_queue
    with celery_app.connection_for_write() as broker:
        broker.default_channel.queue_purge(name)
        yield broker.default_channel, name
        broker.default_channel.queue_purge(name)
        broker.default_channel.client.delete(f"_kombu.binding.{name}")


def test_migrate_installs_every_schedule():
    names = set(PeriodicTask.objects.values_list("name", flat=True))
    celery_app.loader.import_default_modules()
    assert {entry["name"] for entry in SCHEDULES} <= names
    for entry in SCHEDULES:
        assert entry["task"] in celery_app.tasks


def test_enqueue_agent_prints_id_and_sends_task(queue):
    channel, name = queue
    CustomerFactory(slug="acme")
    WorkflowFactory(slug="review")
    output = run("enqueue_agent", "--customer=acme", "--workflow=review", "Check it.")
    execution = Execution.objects.get()
    assert output.strip() == str(execution.pk)
    assert execution.status == Execution.Status.QUEUED
    assert channel.client.llen(name) == 1


def test_enqueue_agent_wait_follows_the_run(queue, monkeypatch):
    from agents.management.commands import enqueue_agent

    CustomerFactory(slug="acme")
    WorkflowFactory(slug="review")

    def worker_finishes_run(seconds):
        # Stands in for the worker between two polls: one response, then the end.
        execution = Execution.objects.get()
        ApiMessage.objects.create(
            execution=execution,
            message_id="msg_1",
            sequence=1,
            model="claude-sonnet-4-6",
            input_tokens=10,
            output_tokens=20,
            cost_usd=Decimal("0.00033"),
            output_final=True,
            arrived_at=timezone.now(),
        )
        Execution.objects.filter(pk=execution.pk).update(
            status=Execution.Status.SUCCEEDED,
            finished_at=timezone.now(),
            api_message_count=1,
            cost_usd=Decimal("0.00033"),
        )

    monkeypatch.setattr(enqueue_agent.time, "sleep", worker_finishes_run)
    output = run(
        "enqueue_agent", "--wait", "--customer=acme", "--workflow=review", "Check it."
    )
    execution = Execution.objects.get()
    lines = output.splitlines()
    assert lines[0] == (
        f"Execution {execution.pk}: queued review for acme; "
        "following it until it finishes."
    )
    assert "msg_1" in lines[1]
    assert any("succeeded" in line for line in lines[2:])


def test_enqueue_agent_rejects_unknown_workflow():
    CustomerFactory(slug="acme")
    with pytest.raises(CommandError, match="Workflow 'nope' not found"):
        run("enqueue_agent", "--customer=acme", "--workflow=nope", "Check it.")


def test_show_execution_json_matches_run_agent_keys():
    execution = ExecutionFactory(
        status=Execution.Status.SUCCEEDED, cost_usd=Decimal("0.5")
    )
    for sequence, cost in enumerate([Decimal("0.2"), None], start=1):
        ApiMessage.objects.create(
            execution=execution,
            message_id=f"msg_{sequence}",
            sequence=sequence,
            model="claude-sonnet-4-6",
            input_tokens=10,
            cost_usd=cost,
            arrived_at=timezone.now(),
        )
    lines = [
        json.loads(line)
        for line in run("show_execution", str(execution.pk), "--json").splitlines()
    ]
    assert [line["type"] for line in lines] == ["api_message", "api_message", "summary"]
    assert lines[0]["running_cost_usd"] == "0.2"
    assert lines[1]["cost_usd"] is None
    assert lines[1]["unpriced"] is True
    assert lines[1]["running_cost_usd"] is None
    assert lines[1]["priced_running_cost_usd"] == "0.2"
    summary = lines[-1]
    for key in (
        "execution_id",
        "status",
        "models",
        "api_messages",
        "num_turns",
        "input_tokens",
        "output_tokens",
        "cache_write_5m_tokens",
        "cache_write_1h_tokens",
        "cache_read_tokens",
        "cost_usd",
        "reported_cost_usd",
    ):
        assert key in summary


def test_show_execution_unknown_id():
    with pytest.raises(CommandError, match="Execution 999999 not found"):
        run("show_execution", "999999")


def test_sweep_executions_command(settings):
    stale = timezone.now() - timedelta(
        seconds=settings.AGENTMARGIN_STALE_AFTER_SECONDS + 30
    )
    stalled = ExecutionFactory(
        status=Execution.Status.RUNNING, started_at=stale, heartbeat_at=stale
    )
    alive = ExecutionFactory(
        status=Execution.Status.RUNNING, started_at=stale, heartbeat_at=timezone.now()
    )
    output = run("sweep_executions")
    stalled.refresh_from_db()
    alive.refresh_from_db()
    assert f"Interrupted 1 stalled executions: {stalled.pk}" in output
    assert stalled.status == Execution.Status.INTERRUPTED
    assert "stopped sending heartbeats" in stalled.error
    assert alive.status == Execution.Status.RUNNING
    assert Alert.objects.get().execution_id == stalled.pk
    assert "No stalled executions." in run("sweep_executions")


def test_sweep_sums_totals_from_rows(settings):
    stale = timezone.now() - timedelta(
        seconds=settings.AGENTMARGIN_STALE_AFTER_SECONDS + 30
    )
    # The recorder died before writing its latest totals.
    execution = ExecutionFactory(
        status=Execution.Status.RUNNING, started_at=stale, heartbeat_at=stale
    )
    for sequence, (cost, final) in enumerate(
        [(Decimal("0.25"), True), (Decimal("0.125"), False)], start=1
    ):
        ApiMessage.objects.create(
            execution=execution,
            message_id=f"msg_{sequence}",
            sequence=sequence,
            model="claude-sonnet-4-6",
            input_tokens=100,
            output_tokens=10,
            cost_usd=cost,
            output_final=final,
            arrived_at=stale,
        )
    run("sweep_executions")
    execution.refresh_from_db()
    assert execution.status == Execution.Status.INTERRUPTED
    assert execution.cost_usd == Decimal("0.375")
    assert execution.input_tokens == 200
    assert execution.api_message_count == 2
    assert execution.estimated
