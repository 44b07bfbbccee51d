"""Tests of the Messages API simulator.

The first part talks HTTP to the server directly. The tests marked e2e run
the real Claude Code CLI bundled with claude-agent-sdk against it, so they
also pin how CLI 2.1.332 reports what the simulator sends.
"""

import http.client
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from claude_agent_sdk import (
    AssistantMessage,
    ClaudeAgentOptions,
    ClaudeSDKClient,
    ResultError,
    ResultMessage,
    StreamEvent,
    SystemMessage,
    ToolUseBlock,
    query,
)

from agents.simulator import SCENARIOS, SimulatorServer, scenario_usage
from agents.simulator.scenarios import (
    UnknownScenarioError,
    select_scenario,
    turn_number,
    working_directory,
)

MODEL = "claude-sonnet-4-6"
WORKDIR_IN_BODY = "/srv/sim-work"
# Seconds one CLI run may take; a run takes about 1 s, 2 s with retries.
CLI_RUN_TIMEOUT = 30


@pytest.fixture(scope="module")
def simulator():
    with SimulatorServer(stall_seconds=5) as server:
        yield server


def request_body(
    prompt: str, *, assistant_turns: int = 0, stream: bool = True, model=MODEL
) -> dict[str, Any]:
    """Build a request shaped like the CLI's: context blocks, then the prompt."""
    context = f"<system-reminder>\n - Primary working directory: {WORKDIR_IN_BODY}\n"
    messages: list[dict[str, Any]] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": context + "</system-reminder>"},
                {"type": "text", "text": prompt},
            ],
        }
    ]
    for index in range(assistant_turns):
        tool_use_id = f"toolu_test_{index}"
        messages.append(
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": tool_use_id, "name": "Read", "input": {}}
                ],
            }
        )
        messages.append(
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": tool_use_id, "content": "ok"}
                ],
            }
        )
    return {"model": model, "max_tokens": 1024, "stream": stream, "messages": messages}


def post(
    server: SimulatorServer,
    body: Any,
    path: str = "/v1/messages?beta=true",
    headers: dict[str, str] | None = None,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        connection.request("POST", path, body=payload, headers=all_headers)
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def parse_sse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Split an event stream into (event name, data) pairs."""
    events = []
    for frame in raw.decode().split("\n\n"):
        if not frame:
            continue
        fields = dict(line.split(": ", 1) for line in frame.split("\n"))
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def table_totals(rows: list[dict[str, int]]) -> dict[str, int]:
    return {key: sum(row[key] for row in rows) for key in rows[0]}


# Scenario selection


def test_select_scenario_without_marker_is_default():
    assert select_scenario(request_body("Say hello")).name == "default"


def test_select_scenario_marker_in_later_text_block():
    assert select_scenario(request_body("Go [sim:tool-loop] now")).name == "tool-loop"


def test_select_scenario_marker_in_string_content():
    body = {"messages": [{"role": "user", "content": "[sim:cache] hi"}]}

    assert select_scenario(body).name == "cache"


def test_select_scenario_ignores_later_user_messages():
    body = request_body("plain prompt", assistant_turns=1)
    body["messages"][2]["content"] = "[sim:stall]"

    assert select_scenario(body).name == "default"


def test_select_scenario_first_marker_wins():
    body = request_body("[sim:substitute] then [sim:cache]")

    assert select_scenario(body).name == "substitute"


def test_select_scenario_unknown_marker_raises():
    with pytest.raises(UnknownScenarioError, match="'no-such-thing'"):
        select_scenario(request_body("[sim:no-such-thing]"))


def test_turn_number_counts_assistant_messages():
    assert turn_number(request_body("x")) == 1
    assert turn_number(request_body("x", assistant_turns=3)) == 4


def test_working_directory_from_cli_context_block():
    assert working_directory(request_body("x")) == WORKDIR_IN_BODY
    assert working_directory({"messages": [{"role": "user", "content": "x"}]}) == "."


def test_turns_past_table_repeat_last_row():
    scenario = SCENARIOS["max-turns"]

    assert scenario.turn(7) is scenario.turns[-1]


# Usage tables


def test_scenario_usage_rows_split_cache_writes():
    for name in SCENARIOS:
        for row in scenario_usage(name):
            split = row["ephemeral_5m_input_tokens"] + row["ephemeral_1h_input_tokens"]
            assert row["cache_creation_input_tokens"] == split, name


def test_scenario_usage_tool_loop_reads_prior_prompt():
    rows = scenario_usage("tool-loop")

    for previous, current in zip(rows, rows[1:], strict=False):
        cached = (
            previous["cache_read_input_tokens"]
            + previous["cache_creation_input_tokens"]
        )
        assert current["cache_read_input_tokens"] == cached
        assert current["input_tokens"] > previous["input_tokens"]


def test_scenario_usage_cache_writes_both_lifetimes_first():
    first, *later = scenario_usage("cache")

    assert first["ephemeral_5m_input_tokens"] > 0
    assert first["ephemeral_1h_input_tokens"] > 0
    for row in later:
        assert row["cache_creation_input_tokens"] == 0
        assert row["cache_read_input_tokens"] > 0


def test_scenario_usage_unknown_name_raises():
    with pytest.raises(UnknownScenarioError):
        scenario_usage("nope")


# Server lifecycle


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com", ""])
def test_server_rejects_non_loopback_host(host):
    with pytest.raises(ValueError, match="loopback"):
        SimulatorServer(host=host)


def test_server_localhost_binds_ipv4_loopback():
    with SimulatorServer(host="localhost") as server:
        assert server.url.startswith("http://127.0.0.1:")


def test_server_url_before_start_raises():
    with pytest.raises(RuntimeError, match="start"):
        _ = SimulatorServer().url


def test_health_endpoint(simulator):
    host, port = simulator.url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    connection.request("GET", "/simulator/health")
    response = connection.getresponse()
    body = json.loads(response.read())
    connection.close()

    assert response.status == 200
    assert body["simulator"] is True
    assert body["name"] == "agentmargin-simulator"
    assert body["version"]


def test_head_probe_returns_ok(simulator):
    host, port = simulator.url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    connection.request("HEAD", "/")
    response = connection.getresponse()
    response.read()
    connection.close()

    assert response.status == 200


# Messages over HTTP


def test_stream_default_framing_and_usage(simulator):
    status, headers, raw = post(simulator, request_body("hello"))
    events = parse_sse(raw)
    names = [name for name, _ in events]
    row = scenario_usage("default")[0]

    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    assert headers["request-id"].startswith("req_sim_")
    assert raw.endswith(b"\n\n")
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert names.count("message_delta") == 1
    assert names.count("content_block_delta") >= 2
    for name, data in events:
        assert data["type"] == name

    message = events[0][1]["message"]
    assert message["id"].startswith("msg_sim_")
    assert message["model"] == MODEL
    assert message["usage"]["input_tokens"] == row["input_tokens"]
    assert message["usage"]["cache_read_input_tokens"] == row["cache_read_input_tokens"]
    assert (
        message["usage"]["cache_creation_input_tokens"]
        == row["cache_creation_input_tokens"]
    )
    assert message["usage"]["cache_creation"] == {
        "ephemeral_5m_input_tokens": row["ephemeral_5m_input_tokens"],
        "ephemeral_1h_input_tokens": row["ephemeral_1h_input_tokens"],
    }
    assert message["usage"]["output_tokens"] == 1

    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] == row["output_tokens"]
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == SCENARIOS["default"].turns[0].content[0].text


def test_stream_multi_block_tool_inputs(simulator):
    _, _, raw = post(simulator, request_body("[sim:multi-block]"))
    events = parse_sse(raw)
    starts = [d["content_block"] for n, d in events if n == "content_block_start"]
    partial_json: dict[int, str] = {}
    for name, data in events:
        if (
            name == "content_block_delta"
            and data["delta"]["type"] == "input_json_delta"
        ):
            index = data["index"]
            partial_json[index] = (
                partial_json.get(index, "") + data["delta"]["partial_json"]
            )

    assert [block["type"] for block in starts] == ["text", "tool_use", "tool_use"]
    assert [block["name"] for block in starts[1:]] == ["Read", "Read"]
    assert starts[1]["id"] != starts[2]["id"]
    assert json.loads(partial_json[1]) == {"file_path": f"{WORKDIR_IN_BODY}/notes.txt"}
    assert json.loads(partial_json[2]) == {"file_path": f"{WORKDIR_IN_BODY}/README.md"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_stream_second_turn_uses_second_row(simulator):
    body = request_body("[sim:tool-loop]", assistant_turns=1)
    events = parse_sse(post(simulator, body)[2])
    row = scenario_usage("tool-loop")[1]

    assert events[0][1]["message"]["usage"]["input_tokens"] == row["input_tokens"]
    assert events[-2][1]["usage"]["output_tokens"] == row["output_tokens"]


def test_non_streaming_returns_message(simulator):
    status, headers, raw = post(simulator, request_body("[sim:cache]", stream=False))
    message = json.loads(raw)
    row = scenario_usage("cache")[0]

    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert message["id"].startswith("msg_sim_")
    assert message["content"][0]["type"] == "tool_use"
    assert message["stop_reason"] == "tool_use"
    assert message["usage"]["output_tokens"] == row["output_tokens"]
    assert message["usage"]["cache_creation"]["ephemeral_1h_input_tokens"] == 8_000


def test_message_ids_unique(simulator):
    ids = set()
    for _ in range(20):
        message = json.loads(post(simulator, request_body("x", stream=False))[2])
        ids.add(message["id"])

    assert len(ids) == 20


def test_substitute_reports_other_model(simulator):
    requested_46 = json.loads(
        post(simulator, request_body("[sim:substitute]", stream=False))[2]
    )
    requested_45 = json.loads(
        post(
            simulator,
            request_body(
                "[sim:substitute]", stream=False, model="claude-sonnet-4-5-20250929"
            ),
        )[2]
    )

    assert requested_46["model"] == "claude-sonnet-4-5-20250929"
    assert requested_45["model"] == "claude-haiku-4-5-20251001"


def test_overloaded_first_attempt_each_turn(simulator):
    headers = {"X-Claude-Code-Session-Id": "session-overloaded-http"}
    turn_1 = request_body("[sim:overloaded]")
    turn_2 = request_body("[sim:overloaded]", assistant_turns=1)

    first_status, first_headers, first_raw = post(simulator, turn_1, headers=headers)
    retry_status, _, retry_raw = post(simulator, turn_1, headers=headers)
    next_turn_status, _, _ = post(simulator, turn_2, headers=headers)

    assert first_status == 529
    assert json.loads(first_raw) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    assert first_headers["request-id"].startswith("req_sim_")
    assert retry_status == 200
    assert parse_sse(retry_raw)[-1][0] == "message_stop"
    assert next_turn_status == 529


def test_error_midstream_then_retry(simulator):
    headers = {"X-Claude-Code-Session-Id": "session-midstream-http"}
    body = request_body("[sim:error-midstream]")

    first = parse_sse(post(simulator, body, headers=headers)[2])
    retry = parse_sse(post(simulator, body, headers=headers)[2])

    assert [name for name, _ in first] == ["message_start", "ping", "error"]
    assert first[-1][1]["error"]["type"] == "overloaded_error"
    assert retry[-1][0] == "message_stop"
    assert first[0][1]["message"]["id"] != retry[0][1]["message"]["id"]


def test_error_midstream_non_streaming_gets_529(simulator):
    headers = {"X-Claude-Code-Session-Id": "session-midstream-json"}
    body = request_body("[sim:error-midstream]", stream=False)

    first_status, _, first_raw = post(simulator, body, headers=headers)
    retry_status, _, retry_raw = post(simulator, body, headers=headers)

    assert first_status == 529
    assert json.loads(first_raw)["error"]["type"] == "overloaded_error"
    assert retry_status == 200
    assert json.loads(retry_raw)["usage"]["output_tokens"] == 29


def test_count_tokens_is_deterministic(simulator):
    path = "/v1/messages/count_tokens?beta=true"
    short = request_body("short")
    longer = request_body("a much longer prompt " * 50)

    first = json.loads(post(simulator, short, path=path)[2])
    again = json.loads(post(simulator, short, path=path)[2])
    bigger = json.loads(post(simulator, longer, path=path)[2])

    assert first["input_tokens"] > 0
    assert again == first
    assert bigger["input_tokens"] > first["input_tokens"]


@pytest.mark.parametrize(
    ("body", "path", "status", "error_type"),
    [
        (b"{not json", "/v1/messages", 400, "invalid_request_error"),
        (b"[1, 2]", "/v1/messages", 400, "invalid_request_error"),
        ({"messages": []}, "/v1/messages", 400, "invalid_request_error"),
        (request_body("[sim:bogus]"), "/v1/messages", 400, "invalid_request_error"),
        (request_body("x"), "/v1/complete", 404, "not_found_error"),
    ],
)
def test_bad_requests_get_api_errors(simulator, body, path, status, error_type):
    got_status, _, raw = post(simulator, body, path=path)

    assert got_status == status
    assert json.loads(raw)["error"]["type"] == error_type


def test_requests_are_recorded(simulator):
    post(simulator, request_body("[sim:cache] recorded", assistant_turns=2))

    record = simulator.requests[-1]
    assert record.method == "POST"
    assert record.path == "/v1/messages?beta=true"
    assert record.scenario == "cache"
    assert record.turn == 3
    assert record.stream is True
    assert record.model == MODEL
    assert record.message_id.startswith("msg_sim_")


def test_stall_sends_start_then_closes_at_limit():
    with SimulatorServer(stall_seconds=0.3) as server:
        started = time.monotonic()
        _, _, raw = post(server, request_body("[sim:stall]"))
        elapsed = time.monotonic() - started

    names = [name for name, _ in parse_sse(raw)]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
    ]
    assert 0.3 <= elapsed < 3


def test_stall_ends_on_client_disconnect(caplog):
    caplog.set_level(logging.INFO, logger="agents.simulator.server")
    with SimulatorServer(stall_seconds=30) as server:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=5)
        payload = json.dumps(request_body("[sim:stall]")).encode()
        connection.request("POST", "/v1/messages", body=payload)
        response = connection.getresponse()
        head = b""
        while b"content_block_delta" not in head:
            head += response.read1(1024)
        connection.close()
        response.close()

        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            if "client disconnected" in caplog.text:
                break
            time.sleep(0.05)

    assert "stall ended (client disconnected)" in caplog.text


def test_stop_does_not_wait_for_stalled_response():
    server = SimulatorServer(stall_seconds=60)
    server.start()
    responses = []
    client = threading.Thread(
        target=lambda: responses.append(post(server, request_body("[sim:stall]")))
    )
    client.start()
    deadline = time.monotonic() + 5
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.02)

    started = time.monotonic()
    server.stop()
    client.join(timeout=5)

    assert time.monotonic() - started < 2
    assert not client.is_alive()
    assert responses[0][0] == 200


# End-to-end runs of the real CLI


@dataclass
class AgentRun:
    """Everything one SDK query yielded, and the error it ended with."""

    messages: list[Any] = field(default_factory=list)
    error: Exception | None = None

    @property
    def result(self) -> ResultMessage:
        results = [m for m in self.messages if isinstance(m, ResultMessage)]
        assert len(results) == 1, results
        return results[0]

    def top_level_events(self, event_type: str) -> list[dict[str, Any]]:
        return [
            message.event
            for message in self.messages
            if isinstance(message, StreamEvent)
            and message.parent_tool_use_id is None
            and message.event["type"] == event_type
        ]

    @property
    def started_messages(self) -> list[dict[str, Any]]:
        return [event["message"] for event in self.top_level_events("message_start")]

    @property
    def assistant_messages(self) -> list[AssistantMessage]:
        return [m for m in self.messages if isinstance(m, AssistantMessage)]


def agent_options(
    url: str, tmp_path: Path, *, max_turns: int, allowed_tools: list[str], env=None
) -> ClaudeAgentOptions:
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    (workdir / "notes.txt").write_text("task one\ntask two\ntask three\n")
    (workdir / "README.md").write_text("# Simulator test project\n")
    return ClaudeAgentOptions(
        model=MODEL,
        max_turns=max_turns,
        include_partial_messages=True,
        permission_mode="acceptEdits",
        allowed_tools=allowed_tools,
        cwd=str(workdir),
        env={
            "ANTHROPIC_BASE_URL": url,
            "ANTHROPIC_API_KEY": "sk-sim-test",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            # Session transcripts and task output files go here instead of
            # ~/.claude and /tmp/claude-<uid>.
            "CLAUDE_CONFIG_DIR": str(tmp_path / "config"),
            "CLAUDE_CODE_TMPDIR": str(tmp_path / "cli-tmp"),
            **(env or {}),
        },
    )


def run_agent(
    url: str,
    tmp_path: Path,
    scenario: str,
    *,
    max_turns: int = 8,
    allowed_tools: tuple[str, ...] = ("Read",),
    env: dict[str, str] | None = None,
) -> AgentRun:
    options = agent_options(
        url, tmp_path, max_turns=max_turns, allowed_tools=list(allowed_tools), env=env
    )
    run = AgentRun()

    async def collect() -> None:
        prompt = f"[sim:{scenario}] Run the scripted scenario."
        with anyio.fail_after(CLI_RUN_TIMEOUT):
            try:
                async for message in query(prompt=prompt, options=options):
                    run.messages.append(message)
            except ResultError as error:
                run.error = error

    anyio.run(collect)
    return run


def assert_stream_matches_table(run: AgentRun, scenario: str) -> None:
    """Check message ids, per-message usage and output counts against the table."""
    rows = scenario_usage(scenario)
    started = run.started_messages
    ids = [message["id"] for message in started]
    deltas = run.top_level_events("message_delta")

    assert len(set(ids)) == len(rows)
    assert all(message_id.startswith("msg_sim_") for message_id in ids)
    assert [delta["usage"]["output_tokens"] for delta in deltas] == [
        row["output_tokens"] for row in rows
    ]
    for message, row in zip(started, rows, strict=True):
        usage = message["usage"]
        assert usage["input_tokens"] == row["input_tokens"]
        assert usage["cache_read_input_tokens"] == row["cache_read_input_tokens"]
        assert usage["cache_creation"] == {
            "ephemeral_5m_input_tokens": row["ephemeral_5m_input_tokens"],
            "ephemeral_1h_input_tokens": row["ephemeral_1h_input_tokens"],
        }
        assert usage["output_tokens"] == 1
    top_level = [m for m in run.assistant_messages if m.parent_tool_use_id is None]
    assert {m.message_id for m in top_level} == set(ids)


def assert_result_totals(result: ResultMessage, rows: list[dict[str, int]]) -> None:
    totals = table_totals(rows)
    for key in (
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "output_tokens",
    ):
        assert result.usage[key] == totals[key], key


# num_turns as CLI 2.1.332 reports it: one more than the number of tool
# results, whatever the number of API responses.
@pytest.mark.e2e
@pytest.mark.parametrize(
    ("scenario", "num_turns", "tool_names"),
    [
        ("default", 1, []),
        ("multi-block", 3, ["Read", "Read"]),
        ("tool-loop", 4, ["Read", "Read", "Read"]),
        ("cache", 3, ["Read", "Read"]),
        ("substitute", 1, []),
    ],
)
def test_e2e_scenario_completes(simulator, tmp_path, scenario, num_turns, tool_names):
    run = run_agent(simulator.url, tmp_path, scenario)
    records = [r for r in simulator.requests if r.scenario == scenario]
    result = run.result
    rows = scenario_usage(scenario)
    tools_used = [
        block.name
        for message in run.assistant_messages
        for block in message.content
        if isinstance(block, ToolUseBlock)
    ]

    assert run.error is None
    assert result.subtype == "success"
    assert result.num_turns == num_turns
    assert tools_used == tool_names
    assert_stream_matches_table(run, scenario)
    assert_result_totals(result, rows)
    assert [r.turn for r in records[-len(rows) :]] == list(range(1, len(rows) + 1))


@pytest.mark.e2e
def test_e2e_multi_block_shares_message_id(simulator, tmp_path):
    run = run_agent(simulator.url, tmp_path, "multi-block")
    first_id = run.started_messages[0]["id"]
    first_response = [m for m in run.assistant_messages if m.message_id == first_id]

    assert len(first_response) == 3
    assert len({json.dumps(m.usage, sort_keys=True) for m in first_response}) == 1


@pytest.mark.e2e
def test_e2e_substitute_model_in_stream(simulator, tmp_path):
    run = run_agent(simulator.url, tmp_path, "substitute")

    assert run.started_messages[0]["model"] == "claude-sonnet-4-5-20250929"
    assert run.assistant_messages[0].model == "claude-sonnet-4-5-20250929"
    # The CLI keys model_usage by the requested model, not the reported one.
    assert list(run.result.model_usage) == [MODEL]


@pytest.mark.e2e
def test_e2e_overloaded_retries_each_turn(simulator, tmp_path):
    started = time.monotonic()
    run = run_agent(simulator.url, tmp_path, "overloaded")
    elapsed = time.monotonic() - started
    session_records = [r for r in simulator.requests if r.scenario == "overloaded"][-4:]

    assert run.result.subtype == "success"
    assert run.result.num_turns == 2
    assert [(r.turn, r.status) for r in session_records] == [
        (1, 529),
        (1, 200),
        (2, 529),
        (2, 200),
    ]
    assert_stream_matches_table(run, "overloaded")
    assert_result_totals(run.result, scenario_usage("overloaded"))
    # Two retries of about 0.5 s each, plus CLI start-up.
    assert elapsed < 10


@pytest.mark.e2e
def test_e2e_max_turns_ends_with_error(simulator, tmp_path):
    run = run_agent(simulator.url, tmp_path, "max-turns", max_turns=2)
    deltas = run.top_level_events("message_delta")

    assert isinstance(run.error, ResultError)
    assert run.result.subtype == "error_max_turns"
    assert run.result.num_turns == 3
    assert len({m["id"] for m in run.started_messages}) == 2
    assert [d["usage"]["output_tokens"] for d in deltas] == [
        row["output_tokens"] for row in scenario_usage("max-turns")
    ]
    assert_result_totals(run.result, scenario_usage("max-turns"))


@pytest.mark.e2e
def test_e2e_error_midstream_counts_failed_attempt(simulator, tmp_path):
    run = run_agent(simulator.url, tmp_path, "error-midstream")
    started = run.started_messages
    row = scenario_usage("error-midstream")[0]

    assert run.result.subtype == "success"
    assert len(started) == 2
    assert started[0]["id"] != started[1]["id"]
    assert [
        d["usage"]["output_tokens"] for d in run.top_level_events("message_delta")
    ] == [row["output_tokens"]]
    # CLI 2.1.332 adds the failed attempt's prompt and its one output token
    # to ResultMessage.usage, but leaves it out of model_usage.
    assert run.result.usage["input_tokens"] == 2 * row["input_tokens"]
    assert run.result.usage["output_tokens"] == row["output_tokens"] + 1
    assert run.result.model_usage[MODEL]["inputTokens"] == row["input_tokens"]


@pytest.mark.e2e
def test_e2e_subagent_runs_child_scenario(simulator, tmp_path):
    run = run_agent(
        simulator.url,
        tmp_path,
        "subagent",
        allowed_tools=("Read", "Agent"),
        # Without this, CLI 2.1.332 sends none of the subagent's messages.
        env={"CLAUDE_CODE_FORWARD_SUBAGENT_TEXT": "1"},
    )
    records = [r for r in simulator.requests if r.scenario in ("subagent", "child")]
    agent_call = run.assistant_messages[0].content[0]
    child_messages = [m for m in run.assistant_messages if m.parent_tool_use_id]
    child_row = scenario_usage("child")[0]
    notifications = [
        m
        for m in run.messages
        if isinstance(m, SystemMessage) and m.subtype == "task_notification"
    ]

    assert run.result.subtype == "success"
    assert run.result.num_turns == 2
    assert [(r.scenario, r.turn) for r in records[-3:]] == [
        ("subagent", 1),
        ("child", 1),
        ("subagent", 2),
    ]
    assert isinstance(agent_call, ToolUseBlock)
    assert agent_call.name == "Agent"
    assert_stream_matches_table(run, "subagent")

    assert len(child_messages) == 1
    assert child_messages[0].parent_tool_use_id == agent_call.id
    assert child_messages[0].message_id == records[-2].message_id
    assert child_messages[0].usage["input_tokens"] == child_row["input_tokens"]
    # The child's output count never reaches the SDK stream: its messages
    # carry message_start usage, and its stream events are not forwarded.
    assert child_messages[0].usage["output_tokens"] == 1
    # ResultMessage.usage covers the parent only; the task notification
    # gives the child's total.
    assert_result_totals(run.result, scenario_usage("subagent"))
    child_total = sum(
        child_row[key]
        for key in (
            "input_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "output_tokens",
        )
    )
    assert notifications[0].data["usage"]["total_tokens"] == child_total


@pytest.mark.e2e
def test_e2e_stall_interrupted_by_client(simulator, tmp_path):
    options = agent_options(
        simulator.url, tmp_path, max_turns=2, allowed_tools=["Read"]
    )
    run = AgentRun()

    async def interrupt_on_first_delta() -> None:
        with anyio.fail_after(CLI_RUN_TIMEOUT):
            async with ClaudeSDKClient(options=options) as client:
                await client.query("[sim:stall] Start answering.")
                async for message in client.receive_response():
                    run.messages.append(message)
                    if (
                        isinstance(message, StreamEvent)
                        and message.event["type"] == "content_block_delta"
                    ):
                        await client.interrupt()

    anyio.run(interrupt_on_first_delta)
    stall_records = [r for r in simulator.requests if r.scenario == "stall"]
    row = scenario_usage("stall")[0]

    assert run.result.subtype == "error_during_execution"
    assert run.result.terminal_reason == "aborted_streaming"
    assert len(run.started_messages) == 1
    assert run.started_messages[0]["id"] == stall_records[-1].message_id
    assert run.started_messages[0]["usage"]["input_tokens"] == row["input_tokens"]
