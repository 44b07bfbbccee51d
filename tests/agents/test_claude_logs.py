"""Import of Claude Code session logs, from hand-written lines.

Expected costs are worked out here from the published rates, so a fault
in the pricing engine cannot hide itself.
"""

import json
import random
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from agents.models import ApiMessage, Execution
from tests.factories import CustomerFactory, WorkflowFactory

pytestmark = pytest.mark.django_db

SESSION = "0c3e4c55-2222-4b7a-8f00-9a1b2c3d4e5f"
PROJECT = "-home-dev-shop"
SONNET = "claude-sonnet-4-6"
HAIKU = "claude-haiku-4-5"
MILLION = Decimal(1_000_000)

# USD per million tokens: input, 5-minute cache write, cache read, output.
RATES = {
    SONNET: (Decimal("3"), Decimal("3.75"), Decimal("0.30"), Decimal("15")),
    HAIKU: (Decimal("1"), Decimal("1.25"), Decimal("0.10"), Decimal("5")),
}


def cost(model, input_tokens, written, read, output):
    rates = RATES[model]
    counts = (input_tokens, written, read, output)
    return sum(n * rate for n, rate in zip(counts, rates, strict=True)) / MILLION


def usage(input_tokens=1000, written=0, read=0, output=100):
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
        "output_tokens": output,
        "cache_creation": {
            "ephemeral_5m_input_tokens": written,
            "ephemeral_1h_input_tokens": 0,
        },
        "service_tier": "standard",
    }


def assistant(
    message_id,
    *,
    model=SONNET,
    request_id=None,
    at="2026-11-03T09:00:00.000Z",
    block="text",
    stop_reason="end_turn",
    sidechain=False,
    agent_id=None,
    session=SESSION,
    **counts,
):
    line = {
        "parentUuid": None,
        "isSidechain": sidechain,
        "type": "assistant",
        "sessionId": session,
        "timestamp": at,
        "message": {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": block, "text": "..."}],
            "stop_reason": stop_reason,
            "usage": usage(**counts),
        },
    }
    if request_id:
        line["requestId"] = request_id
    if agent_id:
        line["agentId"] = agent_id
    return line


NO_USAGE_LINES = [
    {"type": "queue-operation", "operation": "enqueue", "sessionId": SESSION},
    {"type": "summary", "summary": "Shop fixes", "leafUuid": "u1"},
    {
        "type": "attachment",
        "sessionId": SESSION,
        "attachment": {"type": "date", "date": "2026-11-03"},
    },
    {"type": "cost-state", "sessionId": SESSION, "totalCostUSD": 9.99},
    {"type": "api-request-shape", "sessionId": SESSION, "shape": {"system": []}},
    {
        "type": "user",
        "sessionId": SESSION,
        "message": {"role": "user", "content": "Fix the cart."},
    },
]


def write_log(folder, lines, *, session=SESSION, project=PROJECT):
    path = folder / "projects" / project / f"{session}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(
            (line if isinstance(line, str) else json.dumps(line)) + "\n"
            for line in lines
        )
    )
    return path


def import_logs(*paths, customer="acme", extra=()):
    out = StringIO()
    arguments = ["import_claude_logs", "--json", *extra]
    if customer:
        arguments.append(f"--customer={customer}")
    call_command(*arguments, *map(str, paths), stdout=out, stderr=StringIO())
    return json.loads(out.getvalue())


def only_session(summary):
    assert len(summary["sessions"]) == 1
    return summary["sessions"][0]


@pytest.fixture(autouse=True)
def catalogue():
    CustomerFactory(slug="acme")
    CustomerFactory(slug="globex")
    WorkflowFactory(slug="review", model=SONNET)


def test_split_response_counted_once(tmp_path):
    # One response with text and two tool uses: three lines, one usage.
    lines = [
        assistant("msg_a", request_id="req_a", block="text", output=80),
        assistant("msg_a", request_id="req_a", block="tool_use", output=80),
        assistant("msg_a", request_id="req_a", block="tool_use", output=80),
    ]
    summary = import_logs(write_log(tmp_path, lines))
    session = only_session(summary)
    assert session["api_messages"] == 1
    assert session["output_tokens"] == 80
    assert Decimal(session["cost_usd"]) == cost(SONNET, 1000, 0, 0, 80)
    assert summary["duplicate_lines"] == 2


def test_largest_output_wins_in_any_order(tmp_path):
    lines = [
        assistant("msg_a", request_id="req_a", output=1, at="2026-11-03T09:00:00Z"),
        assistant("msg_a", request_id="req_a", output=57, at="2026-11-03T09:00:01Z"),
        assistant("msg_a", request_id="req_a", output=212, at="2026-11-03T09:00:02Z"),
        assistant("msg_b", request_id="req_b", written=2000, output=30),
        assistant("msg_b", request_id="req_b", written=2000, output=9),
        assistant("msg_c", model=HAIKU, read=5000, output=44),
    ]
    expected = (
        cost(SONNET, 1000, 0, 0, 212)
        + cost(SONNET, 1000, 2000, 0, 30)
        + cost(HAIKU, 1000, 0, 5000, 44)
    )
    shuffler = random.Random(7)
    for attempt in range(4):
        shuffled = lines[:]
        shuffler.shuffle(shuffled)
        session_id = f"{SESSION[:-1]}{attempt}"
        for line in shuffled:
            line["sessionId"] = session_id
            # Each session has responses of its own.
            line["message"]["id"] = line["message"]["id"][:5] + str(attempt)
        path = write_log(tmp_path / str(attempt), shuffled, session=session_id)
        session = only_session(import_logs(path))
        assert Decimal(session["cost_usd"]) == expected
        assert session["output_tokens"] == 212 + 30 + 44
        assert session["models"] == [HAIKU, SONNET]
    message = ApiMessage.objects.get(message_id="msg_a0")
    assert message.output_tokens == 212
    assert message.output_final


def test_log_without_request_ids(tmp_path):
    lines = [
        assistant("msg_a", output=40),
        assistant("msg_a", output=40, block="tool_use"),
        assistant("msg_b", output=60),
    ]
    session = only_session(import_logs(write_log(tmp_path, lines)))
    assert session["api_messages"] == 2
    assert Decimal(session["cost_usd"]) == cost(SONNET, 1000, 0, 0, 40) + cost(
        SONNET, 1000, 0, 0, 60
    )


def test_request_only_copy_merged(tmp_path):
    # A copy that lost its message id still names the request.
    nameless = assistant("", request_id="req_a", output=90)
    lines = [nameless, assistant("msg_a", request_id="req_a", output=50)]
    session = only_session(import_logs(write_log(tmp_path, lines)))
    assert session["api_messages"] == 1
    assert session["output_tokens"] == 90


def test_sidechain_lines_count(tmp_path):
    lines = [
        assistant("msg_main", output=100, stop_reason="tool_use"),
        assistant("msg_child", output=70, sidechain=True, agent_id="a1", model=HAIKU),
        assistant("msg_main2", output=20, at="2026-11-03T09:01:00Z"),
    ]
    path = write_log(tmp_path, lines[:1] + lines[2:])
    child = path.parent / SESSION / "subagents" / "agent-a1.jsonl"
    child.parent.mkdir(parents=True)
    child.write_text(json.dumps(lines[1]) + "\n")
    session = only_session(import_logs(tmp_path / "projects"))
    assert session["api_messages"] == 3
    assert Decimal(session["cost_usd"]) == (
        cost(SONNET, 1000, 0, 0, 100)
        + cost(HAIKU, 1000, 0, 0, 70)
        + cost(SONNET, 1000, 0, 0, 20)
    )
    row = ApiMessage.objects.get(message_id="msg_child")
    assert row.parent_tool_use_id == "agent:a1"
    execution = Execution.objects.get(sdk_session_id=SESSION)
    assert execution.num_turns == 2
    assert execution.status == Execution.Status.SUCCEEDED


def test_unknown_model_is_unpriced(tmp_path):
    lines = [
        assistant("msg_a", output=10),
        assistant("msg_b", model="claude-imaginary-9", output=10),
    ]
    summary = import_logs(write_log(tmp_path, lines))
    session = only_session(summary)
    assert session["cost_usd"] is None
    assert Decimal(session["priced_cost_usd"]) == cost(SONNET, 1000, 0, 0, 10)
    assert session["unpriced_models"] == ["claude-imaginary-9"]
    assert summary["unpriced_models"] == ["claude-imaginary-9"]
    assert summary["cost_usd"] is None
    row = ApiMessage.objects.get(message_id="msg_b")
    assert row.cost_usd is None
    assert row.output_tokens == 10
    assert Execution.objects.get(sdk_session_id=SESSION).unpriced


def test_lines_without_usage_skipped(tmp_path):
    lines = [*NO_USAGE_LINES, assistant("msg_a", output=10)]
    summary = import_logs(write_log(tmp_path, lines))
    assert summary["skipped_lines"] == len(NO_USAGE_LINES)
    assert summary["malformed_lines"] == 0
    assert only_session(summary)["api_messages"] == 1


def test_synthetic_error_message_skipped(tmp_path):
    lines = [assistant("msg_err", model="<synthetic>"), assistant("msg_a", output=5)]
    summary = import_logs(write_log(tmp_path, lines))
    assert only_session(summary)["api_messages"] == 1
    assert summary["skipped_lines"] == 1


def test_truncated_last_line_reported(tmp_path):
    whole = assistant("msg_a", output=10)
    cut = json.dumps(assistant("msg_b", output=10))[:150]
    summary = import_logs(write_log(tmp_path, [whole, "{not json", cut]))
    assert summary["malformed_lines"] == 2
    assert len(summary["errors"]) == 2
    assert ":3: " in summary["errors"][1]
    assert only_session(summary)["api_messages"] == 1


def test_invalid_usage_is_malformed(tmp_path):
    broken = assistant("msg_b")
    broken["message"]["usage"]["output_tokens"] = -4
    summary = import_logs(write_log(tmp_path, [assistant("msg_a"), broken]))
    assert summary["malformed_lines"] == 1
    assert "output_tokens must not be negative" in summary["errors"][0]
    assert only_session(summary)["api_messages"] == 1


def test_reimport_changes_nothing(tmp_path):
    lines = [assistant("msg_a", output=10), assistant("msg_b", output=20)]
    path = write_log(tmp_path, lines)
    first = only_session(import_logs(path))
    execution = Execution.objects.get(pk=first["execution_id"])
    second = only_session(import_logs(path))
    assert second["execution_id"] == first["execution_id"]
    assert second["created"] is False
    assert second["new_api_messages"] == 0
    assert second["cost_usd"] == first["cost_usd"]
    again = Execution.objects.get(pk=first["execution_id"])
    assert again.finished_at == execution.finished_at
    assert again.cost_usd == execution.cost_usd
    assert ApiMessage.objects.count() == 2


def test_grown_session_topped_up(tmp_path):
    lines = [assistant("msg_a", output=10, stop_reason="tool_use")]
    path = write_log(tmp_path, lines)
    first = only_session(import_logs(path))
    assert first["status"] == "interrupted"
    lines.append(assistant("msg_b", output=20, at="2026-11-03T09:05:00Z"))
    write_log(tmp_path, lines)
    second = only_session(import_logs(path))
    assert second["execution_id"] == first["execution_id"]
    assert second["new_api_messages"] == 1
    assert second["api_messages"] == 2
    assert second["status"] == "succeeded"
    assert Decimal(second["cost_usd"]) == cost(SONNET, 1000, 0, 0, 10) + cost(
        SONNET, 1000, 0, 0, 20
    )


def test_resumed_copy_counted_once(tmp_path):
    first = "11111111-0000-4000-8000-000000000001"
    resumed = "11111111-0000-4000-8000-000000000002"
    write_log(tmp_path, [assistant("msg_a", session=first, output=10)], session=first)
    # The resumed session's file repeats the earlier response.
    write_log(
        tmp_path,
        [
            assistant("msg_a", session=resumed, output=10),
            assistant("msg_b", session=resumed, output=30),
        ],
        session=resumed,
    )
    summary = import_logs(tmp_path / "projects")
    assert summary["api_messages"] == 2
    assert summary["copied_responses"] == 1
    assert ApiMessage.objects.filter(message_id="msg_a").count() == 1


def test_responses_priced_at_their_time(tmp_path):
    from datetime import UTC, datetime

    from agents.models import ModelPrice

    ModelPrice.objects.create(
        model=SONNET,
        valid_from=datetime(2026, 11, 3, 12, tzinfo=UTC),
        input_per_mtok=Decimal("1"),
        output_per_mtok=Decimal("15"),
        cache_write_5m_per_mtok=Decimal("3.75"),
        cache_write_1h_per_mtok=Decimal("6"),
        cache_read_per_mtok=Decimal("0.30"),
    )
    lines = [
        assistant("msg_a", output=0, at="2026-11-03T11:00:00Z"),
        assistant("msg_b", output=0, at="2026-11-03T13:00:00Z"),
    ]
    session = only_session(import_logs(write_log(tmp_path, lines)))
    # 1,000 input tokens at $3 before the new price, at $1 after it.
    assert Decimal(session["cost_usd"]) == Decimal("0.004")
    execution = Execution.objects.get(pk=session["execution_id"])
    assert execution.created_at == datetime(2026, 11, 3, 11, tzinfo=UTC)


def test_since_drops_older_responses(tmp_path):
    lines = [
        assistant("msg_old", output=10, at="2026-10-30T09:00:00Z"),
        assistant("msg_new", output=20, at="2026-11-03T09:00:00Z"),
    ]
    summary = import_logs(write_log(tmp_path, lines), extra=["--since=2026-11-01"])
    assert only_session(summary)["api_messages"] == 1
    assert summary["before_since"] == 1


def test_map_attributes_projects(tmp_path):
    other = "22222222-0000-4000-8000-000000000001"
    write_log(tmp_path, [assistant("msg_a")])
    write_log(
        tmp_path,
        [assistant("msg_b", session=other)],
        session=other,
        project="-home-dev-bank",
    )
    summary = import_logs(
        tmp_path / "projects",
        customer=None,
        extra=[f"--map={PROJECT}=globex", "--workflow=review"],
    )
    assert len(summary["sessions"]) == 1
    assert summary["unattributed"] == {"-home-dev-bank": 1}
    execution = Execution.objects.get(sdk_session_id=SESSION)
    assert execution.customer.slug == "globex"
    assert execution.workflow.slug == "review"
    assert execution.source == Execution.Source.IMPORTED


def test_default_workflow_created(tmp_path):
    session = only_session(import_logs(write_log(tmp_path, [assistant("msg_a")])))
    execution = Execution.objects.get(pk=session["execution_id"])
    assert execution.workflow.slug == "claude-code"
    assert not execution.workflow.is_active


def test_session_of_other_customer_reported(tmp_path):
    path = write_log(tmp_path, [assistant("msg_a")])
    import_logs(path)
    summary = import_logs(path, customer="globex")
    session = only_session(summary)
    assert "already imported" in session["error"]
    assert Execution.objects.count() == 1


def test_command_rejects_bad_input(tmp_path):
    with pytest.raises(CommandError, match="No customer"):
        import_logs(tmp_path, customer=None)
    with pytest.raises(CommandError, match="Invalid --map"):
        import_logs(tmp_path, extra=["--map=acme"])
    with pytest.raises(CommandError, match="Invalid --since"):
        import_logs(tmp_path, extra=["--since=yesterday"])
    with pytest.raises(CommandError, match="not found"):
        import_logs(tmp_path / "missing")


def test_text_summary(tmp_path):
    path = write_log(tmp_path, [assistant("msg_a", output=10), "{cut"])
    out = StringIO()
    call_command("import_claude_logs", "--customer=acme", str(path), stdout=out)
    text = out.getvalue()
    assert "Sessions: 1 (1 new, 0 failed)" in text
    assert "API messages: 1 (1 new)" in text
    assert "1 malformed" in text


def test_progress_bar_shows_counts():
    from agents.logs.reader import ReadStats
    from agents.management.commands.import_claude_logs import ProgressBar

    stream = StringIO()
    bar = ProgressBar(stream)
    bar(ReadStats(files=3, lines=12_345, bytes=5_500_000, malformed_lines=1))
    bar.close()
    text = stream.getvalue()
    assert text.startswith("\r3 files, 12,345 lines, 5.5 MB")
    assert "1 malformed" in text
    assert text.endswith("\n")


def test_live_run_log_not_counted_again(tmp_path):
    from datetime import UTC, datetime

    from tests.factories import ExecutionFactory

    live = ExecutionFactory(sdk_session_id=SESSION, status=Execution.Status.SUCCEEDED)
    ApiMessage.objects.create(
        execution=live,
        message_id="msg_live",
        sequence=1,
        model=SONNET,
        output_tokens=10,
        cost_usd=Decimal("0.00315"),
        arrived_at=datetime(2026, 11, 3, 9, tzinfo=UTC),
    )
    summary = import_logs(write_log(tmp_path, [assistant("msg_live", output=10)]))
    assert summary["sessions"] == []
    assert summary["copied_responses"] == 1
    assert ApiMessage.objects.count() == 1
    assert not Execution.objects.filter(source=Execution.Source.IMPORTED).exists()
