"""Session logs written by the real Claude Code CLI against the local simulator.

The bundled CLI writes its session logs under CLAUDE_CONFIG_DIR/projects,
as Claude Code does under ~/.claude. The import must reach the exact cost
of the simulator's scripted usage.
"""

import json
import subprocess
from decimal import Decimal
from io import StringIO
from pathlib import Path

import claude_agent_sdk
import pytest
from django.core.management import call_command

from agents.models import ApiMessage, Execution
from agents.simulator import SimulatorServer, scenario_usage
from tests.agents.scripted_cost import expected_cost
from tests.factories import CustomerFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]


@pytest.fixture(scope="module")
def simulator():
    with SimulatorServer(stall_seconds=30) as server:
        yield server


@pytest.fixture(scope="module")
def config_dir(simulator, tmp_path_factory):
    """Run the CLI once per scenario and return its config folder."""
    cli = Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"
    assert cli.exists(), "the bundled Claude Code CLI is missing"
    root = tmp_path_factory.mktemp("cli")
    workspace = root / "workspace"
    workspace.mkdir()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(root),
        "ANTHROPIC_BASE_URL": simulator.url,
        "ANTHROPIC_API_KEY": "sk-ant-simulator",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CONFIG_DIR": str(root / "config"),
        "CLAUDE_CODE_TMPDIR": str(root / "tmp"),
    }
    for scenario in SCENARIOS:
        completed = subprocess.run(
            [
                str(cli),
                "-p",
                f"[sim:{scenario}] Read the notes.",
                "--output-format",
                "stream-json",
                "--verbose",
                "--model",
                "claude-sonnet-4-6",
                "--allowedTools",
                "Read,Task",
                "--permission-mode",
                "acceptEdits",
            ],
            cwd=workspace,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert completed.returncode == 0, completed.stderr
    return root / "config"


SCENARIOS = {
    "multi-block": ("claude-sonnet-4-6", ["multi-block"]),
    "tool-loop": ("claude-sonnet-4-6", ["tool-loop"]),
    "cache": ("claude-sonnet-4-6", ["cache"]),
    "subagent": ("claude-sonnet-4-6", ["subagent", "child"]),
    "substitute": ("claude-sonnet-4-5-20250929", ["substitute"]),
}


def import_tree(path):
    out = StringIO()
    call_command(
        "import_claude_logs",
        "--customer=acme",
        "--json",
        str(path),
        stdout=out,
        stderr=StringIO(),
    )
    return json.loads(out.getvalue())


def test_cli_logs_imported_with_exact_costs(config_dir):
    CustomerFactory(slug="acme")
    summary = import_tree(config_dir / "projects")
    assert summary["malformed_lines"] == 0
    assert summary["errors"] == []
    assert len(summary["sessions"]) == len(SCENARIOS)
    expected = {}
    for model, tables in SCENARIOS.values():
        turns = [turn for table in tables for turn in scenario_usage(table)]
        expected[len(turns), sum(t["output_tokens"] for t in turns)] = (
            expected_cost(model, turns),
            [model],
        )
    found = {}
    for session in summary["sessions"]:
        key = (session["api_messages"], session["output_tokens"])
        found[key] = (Decimal(session["cost_usd"]), session["models"])
        assert session["status"] == "succeeded"
    assert found == expected
    total = sum(cost for cost, _ in expected.values())
    assert Decimal(summary["cost_usd"]) == total
    executions = Execution.objects.filter(source=Execution.Source.IMPORTED)
    assert all(execution.simulated for execution in executions)
    assert not any(execution.estimated for execution in executions)
    assert ApiMessage.objects.exclude(parent_tool_use_id="").count() == 1

    again = import_tree(config_dir / "projects")
    assert again["new_api_messages"] == 0
    assert again["cost_usd"] == summary["cost_usd"]
