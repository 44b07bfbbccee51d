"""Agent runs through the real SDK and bundled CLI against the local simulator.

Expected costs come from `tests.agents.scripted_cost`, not from the
pricing engine, so a pricing fault cannot hide itself.
"""

import json
import subprocess
from decimal import Decimal
from pathlib import Path

import claude_agent_sdk
import pytest
from django.core.management import call_command

from agents.models import ApiMessage, Execution
from agents.runner import ApiTarget, resolve_target, run_execution
from agents.simulator import SimulatorServer, scenario_usage
from tests.agents.scripted_cost import expected_cost
from tests.factories import ExecutionFactory, WorkflowFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def simulator():
    with SimulatorServer(stall_seconds=30) as server:
        yield server


@pytest.fixture
def target(simulator):
    return ApiTarget(base_url=simulator.url, api_key="sk-ant-simulator", simulated=True)


def run(target, scenario, *, model="claude-sonnet-4-6", max_turns=6, timeout=60):
    workflow = WorkflowFactory(slug=f"wf-{model}", model=model, allowed_tools=["Read"])
    execution = ExecutionFactory(
        workflow=workflow,
        prompt=f"[sim:{scenario}] Look at the notes.",
        requested_model=model,
        max_turns=max_turns,
    )
    return run_execution(execution, target=target, timeout_seconds=timeout)


def test_resolve_target_marks_simulator(simulator, settings):
    settings.ANTHROPIC_BASE_URL = simulator.url
    settings.ANTHROPIC_API_KEY = ""
    target = resolve_target()
    assert target.simulated
    assert target.base_url == simulator.url


def test_resolve_target_requires_key_for_real_api(settings):
    from agents.runner import RunnerConfigurationError

    settings.ANTHROPIC_BASE_URL = ""
    settings.ANTHROPIC_API_KEY = ""
    with pytest.raises(RunnerConfigurationError, match="ANTHROPIC_API_KEY is not set"):
        resolve_target()


@pytest.mark.parametrize(
    "scenario", ["default", "multi-block", "tool-loop", "cache", "overloaded"]
)
def test_run_records_exact_cost(target, scenario):
    execution = run(target, scenario)
    turns = scenario_usage(scenario)
    assert execution.status == Execution.Status.SUCCEEDED
    assert execution.simulated
    assert execution.api_message_count == len(turns)
    assert execution.cost_usd == expected_cost("claude-sonnet-4-6", turns)
    assert execution.output_tokens == sum(turn["output_tokens"] for turn in turns)
    assert execution.cache_write_1h_tokens == sum(
        turn["ephemeral_1h_input_tokens"] for turn in turns
    )
    assert not execution.estimated
    assert not execution.unpriced
    assert execution.reported_cost_usd is not None
    assert (
        execution.cost_difference_usd
        == execution.cost_usd - execution.reported_cost_usd
    )
    assert execution.sdk_session_id
    assert all(
        ApiMessage.objects.filter(execution=execution).values_list(
            "output_final", flat=True
        )
    )


def test_run_prices_model_that_answered(target):
    execution = run(target, "substitute")
    message = ApiMessage.objects.get(execution=execution)
    assert execution.requested_model == "claude-sonnet-4-6"
    assert message.model == "claude-sonnet-4-5-20250929"
    assert execution.cost_usd == expected_cost(
        message.model, scenario_usage("substitute")
    )


def test_run_stops_at_max_turns(target):
    execution = run(target, "max-turns", max_turns=2)
    assert execution.status == Execution.Status.MAX_TURNS
    assert execution.api_message_count == 2


def test_run_counts_subagent_messages(target):
    execution = run(target, "subagent")
    rows = list(ApiMessage.objects.filter(execution=execution))
    children = [row for row in rows if row.parent_tool_use_id]
    assert execution.status == Execution.Status.SUCCEEDED
    assert len(rows) == 3
    assert len(children) == 1
    assert children[0].input_tokens == scenario_usage("child")[0]["input_tokens"]
    # The child's own stream events never reach the SDK, so its output comes
    # from the result's per-model total and is marked estimated.
    assert children[0].output_tokens == scenario_usage("child")[0]["output_tokens"]
    assert children[0].estimated
    turns = scenario_usage("subagent") + scenario_usage("child")
    assert execution.cost_usd == expected_cost("claude-sonnet-4-6", turns)


def test_stalled_run_is_interrupted_with_prompt_cost(target):
    execution = run(target, "stall", timeout=3)
    turn = scenario_usage("stall")[0]
    assert execution.status == Execution.Status.INTERRUPTED
    assert execution.api_message_count == 1
    # The prompt was billed; the output is the one token the stream carried.
    assert execution.cost_usd == expected_cost(
        "claude-sonnet-4-6", [{**turn, "output_tokens": 1}]
    )
    assert execution.finished_at is not None
    # The CLI's result counts the one token too, which does not make it final.
    message = execution.api_messages.get()
    assert message.output_final is False
    assert message.estimated is True


def test_run_agent_json_summary(simulator, settings):
    settings.ANTHROPIC_BASE_URL = simulator.url
    call_command("seed_demo", stdout=open("/dev/null", "w"))
    from io import StringIO

    out = StringIO()
    call_command(
        "run_agent",
        "--customer=acme",
        "--workflow=code-review",
        "--json",
        "[sim:multi-block] Review the change.",
        stdout=out,
    )
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    messages, summary = lines[:-1], lines[-1]
    turns = scenario_usage("multi-block")
    assert [line["type"] for line in messages] == ["api_message"] * len(turns)
    assert summary["status"] == "succeeded"
    assert summary["models"] == ["claude-sonnet-4-6"]
    assert summary["api_messages"] == len(turns)
    assert Decimal(summary["cost_usd"]) == expected_cost("claude-sonnet-4-6", turns)
    assert Decimal(messages[-1]["running_cost_usd"]) == Decimal(summary["cost_usd"])
    for key in (
        "execution_id",
        "num_turns",
        "input_tokens",
        "output_tokens",
        "cache_write_5m_tokens",
        "cache_write_1h_tokens",
        "cache_read_tokens",
        "reported_cost_usd",
    ):
        assert key in summary


def cli_transcript(simulator, tmp_path, scenario, *, partial):
    """Run the bundled CLI as `claude -p --output-format stream-json` and return its output file."""
    cli = Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"
    assert cli.exists(), "the bundled Claude Code CLI is missing"
    workspace = tmp_path / "cli-workspace"
    workspace.mkdir(exist_ok=True)
    args = [
        str(cli),
        "-p",
        f"[sim:{scenario}] Read the notes.",
        "--output-format",
        "stream-json",
        "--verbose",
        "--model",
        "claude-sonnet-4-6",
        "--allowedTools",
        "Read",
        "--permission-mode",
        "acceptEdits",
    ]
    if partial:
        args.append("--include-partial-messages")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "ANTHROPIC_BASE_URL": simulator.url,
        "ANTHROPIC_API_KEY": "sk-ant-simulator",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CONFIG_DIR": str(tmp_path / "cli-config"),
        "CLAUDE_CODE_TMPDIR": str(tmp_path / "cli-tmp"),
    }
    completed = subprocess.run(
        args, cwd=workspace, env=env, capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 0, completed.stderr
    path = tmp_path / f"{scenario}-{partial}.jsonl"
    path.write_text(completed.stdout)
    return path


@pytest.mark.parametrize("partial", [True, False])
def test_import_stream_matches_live_cost(simulator, tmp_path, partial):
    from io import StringIO

    call_command("seed_demo", stdout=StringIO())
    path = cli_transcript(simulator, tmp_path, "tool-loop", partial=partial)
    out = StringIO()
    arguments = [
        "import_stream",
        "--customer=acme",
        "--workflow=code-review",
        "--json",
        str(path),
    ]
    call_command(*arguments, stdout=out)
    summary = json.loads(out.getvalue().splitlines()[-1])
    turns = scenario_usage("tool-loop")
    assert summary["status"] == "succeeded"
    assert summary["simulated"] is True
    assert summary["api_messages"] == len(turns)
    assert summary["output_tokens"] == sum(turn["output_tokens"] for turn in turns)
    assert Decimal(summary["cost_usd"]) == expected_cost("claude-sonnet-4-6", turns)
    # Without stream events the per-message outputs come from the result's totals.
    assert summary["estimated"] is (not partial)

    again = StringIO()
    call_command(*arguments, stdout=again)
    second = json.loads(again.getvalue().splitlines()[-1])
    assert second["execution_id"] == summary["execution_id"]
    assert second["cost_usd"] == summary["cost_usd"]
    assert Execution.objects.filter(source=Execution.Source.IMPORTED).count() == 1
