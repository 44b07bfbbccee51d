import json
from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from agents.models import Execution
from tests.factories import CustomerFactory, WorkflowFactory

pytestmark = pytest.mark.django_db

SESSION = "1b6f3c0e-1111-4c2a-9e8f-5d1a2b3c4d5e"
MODEL = "claude-sonnet-4-6"


def transcript_lines(message_id="msg_real_01"):
    usage = {
        "input_tokens": 1000,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 1,
    }
    return [
        {
            "type": "system",
            "subtype": "init",
            "session_id": SESSION,
            "model": MODEL,
            "cwd": "/tmp",
            "tools": [],
            "mcp_servers": [],
            "apiKeySource": "none",
        },
        {
            "type": "assistant",
            "session_id": SESSION,
            "parent_tool_use_id": None,
            "message": {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": MODEL,
                "content": [{"type": "text", "text": "Done."}],
                "usage": usage,
            },
        },
        {
            "type": "result",
            "subtype": "success",
            "session_id": SESSION,
            "is_error": False,
            "duration_ms": 10,
            "duration_api_ms": 9,
            "num_turns": 1,
            "total_cost_usd": 0.0045,
            "usage": usage,
            "modelUsage": {MODEL: {"inputTokens": 1000, "outputTokens": 100}},
        },
    ]


def write(path, lines):
    path.write_text(
        "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
        + "\n"
    )
    return path


def import_stream(path, customer="acme", workflow="review"):
    out = StringIO()
    call_command(
        "import_stream",
        f"--customer={customer}",
        f"--workflow={workflow}",
        "--json",
        "--at=2026-11-02T10:00:00Z",
        str(path),
        stdout=out,
        stderr=StringIO(),
    )
    return json.loads(out.getvalue().splitlines()[-1])


@pytest.fixture(autouse=True)
def catalogue():
    CustomerFactory(slug="acme")
    CustomerFactory(slug="globex")
    WorkflowFactory(slug="review", model=MODEL)
    WorkflowFactory(slug="classify", model=MODEL)


def test_import_fills_output_from_result(tmp_path):
    summary = import_stream(write(tmp_path / "run.jsonl", transcript_lines()))
    # 1000 input at $3 and 100 output at $15 per million tokens.
    assert summary["cost_usd"] == "0.0045"
    assert summary["output_tokens"] == 100
    assert summary["simulated"] is False
    execution = Execution.objects.get(pk=summary["execution_id"])
    assert execution.created_at == datetime(2026, 11, 2, 10, tzinfo=UTC)
    assert execution.cost_usd == Decimal("0.0045")


def test_import_marks_simulator_transcripts(tmp_path):
    summary = import_stream(
        write(tmp_path / "run.jsonl", transcript_lines("msg_sim_000001_abc"))
    )
    assert summary["simulated"] is True


def test_malformed_lines_are_skipped(tmp_path):
    lines = transcript_lines()
    lines.insert(2, "{not json")
    lines.insert(2, '["a list"]')
    summary = import_stream(write(tmp_path / "run.jsonl", lines))
    assert summary["skipped_lines"] == 2
    assert summary["cost_usd"] == "0.0045"


@pytest.mark.parametrize("content", ["", "not json at all\n", '{"type":"result"\n'])
def test_file_without_session_records_nothing(tmp_path, content):
    path = tmp_path / "junk.jsonl"
    path.write_text(content)
    with pytest.raises(CommandError, match="no Claude Code message with a session id"):
        import_stream(path)
    assert Execution.objects.count() == 0


def test_session_cannot_be_imported_for_two_customers(tmp_path):
    path = write(tmp_path / "run.jsonl", transcript_lines())
    first = import_stream(path)
    with pytest.raises(
        CommandError, match=f"already imported as execution {first['execution_id']}"
    ):
        import_stream(path, customer="globex")
    assert Execution.objects.count() == 1


def test_cut_off_transcript_is_interrupted(tmp_path):
    summary = import_stream(write(tmp_path / "run.jsonl", transcript_lines()[:2]))
    assert summary["status"] == "interrupted"
    assert summary["estimated"] is True
    # Only the placeholder output of 1 token is known.
    assert summary["cost_usd"] == "0.003015"


def test_lines_priced_at_their_timestamp(tmp_path):
    from agents.models import ModelPrice

    # A negotiated $1 input rate that starts after the run took place.
    ModelPrice.objects.create(
        model=MODEL,
        valid_from=datetime(2026, 6, 1, tzinfo=UTC),
        input_per_mtok=Decimal("1"),
        output_per_mtok=Decimal("15"),
        cache_write_5m_per_mtok=Decimal("3.75"),
        cache_write_1h_per_mtok=Decimal("6"),
        cache_read_per_mtok=Decimal("0.30"),
    )
    lines = transcript_lines()
    lines[1]["timestamp"] = "2026-03-12T10:00:00.000Z"
    path = write(tmp_path / "run.jsonl", lines)
    out = StringIO()
    call_command(
        "import_stream",
        "--customer=acme",
        "--workflow=review",
        "--json",
        str(path),
        stdout=out,
    )
    summary = json.loads(out.getvalue().splitlines()[-1])
    # List price on 2026-03-12: 1,000 x $3 + 100 x $15.
    assert summary["cost_usd"] == "0.0045"
    execution = Execution.objects.get(pk=summary["execution_id"])
    assert execution.created_at == datetime(2026, 3, 12, 10, tzinfo=UTC)


@pytest.mark.django_db(transaction=True)
def test_concurrent_imports_create_one_execution(tmp_path):
    import threading

    from django.db import connection

    from agents.models import Workflow
    from agents.transcripts import TranscriptError, transcript_import
    from customers.models import Customer

    path = write(tmp_path / "run.jsonl", transcript_lines())
    customer = Customer.objects.get(slug="acme")
    workflow = Workflow.objects.get(slug="review")
    start = threading.Barrier(2)
    errors = []

    def run_import():
        try:
            start.wait(timeout=10)
            transcript_import(
                customer=customer,
                workflow=workflow,
                path=path,
                recorded_at=datetime(2026, 11, 2, tzinfo=UTC),
            )
        except TranscriptError as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run_import) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    execution = Execution.objects.get(sdk_session_id=SESSION)
    assert execution.cost_usd == Decimal("0.0045")
