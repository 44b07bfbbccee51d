"""Recorder cases taken from faults seen with real CLI output and corrupt data.

Rates per million tokens: Sonnet 4.5 and 4.6 input 3, 5-minute cache write
3.75, cache read 0.30, output 15; Haiku 4.5 input 1, output 5.
"""

from decimal import Decimal

import pytest
from claude_agent_sdk import AssistantMessage, TextBlock

from agents.models import ApiMessage, Execution, ModelPrice
from agents.pricing.reprice import reprice_unpriced
from agents.recorder import StreamRecorder
from tests.agents import stream
from tests.factories import ExecutionFactory

pytestmark = pytest.mark.django_db

SONNET_46 = "claude-sonnet-4-6"
SONNET_45 = "claude-sonnet-4-5-20250929"
HAIKU_45 = "claude-haiku-4-5"


def record(messages, *, finish=True, **finish_options):
    execution = ExecutionFactory(requested_model=SONNET_46)
    recorder = StreamRecorder(execution)
    recorder.start()
    for message in messages:
        recorder.handle(message)
    if finish:
        recorder.finish(**finish_options)
    execution.refresh_from_db()
    return execution


def test_model_usage_keyed_by_requested_model():
    usage = stream.usage(input=100, output=1)
    execution = record(
        [
            stream.assistant("msg_1", SONNET_45, usage),
            stream.assistant("msg_2", SONNET_45, usage),
            stream.result(num_turns=2, model_usage={SONNET_46: {"outputTokens": 1000}}),
        ]
    )
    assert execution.output_tokens == 1000
    # 200 input at $3 and 1,000 output at $15.
    assert execution.cost_usd == Decimal("0.0156")
    assert execution.estimated


def test_result_model_without_responses_recorded():
    execution = record(
        [
            stream.message_start("msg_1", SONNET_46, stream.usage(input=10)),
            stream.message_delta(50),
            stream.message_stop(),
            stream.result(
                model_usage={
                    SONNET_46: {"inputTokens": 10, "outputTokens": 50},
                    HAIKU_45: {"inputTokens": 5000, "outputTokens": 200},
                }
            ),
        ]
    )
    extra = ApiMessage.objects.get(execution=execution, model=HAIKU_45)
    assert extra.message_id == f"result:{HAIKU_45}"
    assert extra.estimated
    # Sonnet: 10 x $3 + 50 x $15; Haiku: 5,000 x $1 + 200 x $5.
    assert execution.cost_usd == Decimal("0.00678")


@pytest.mark.parametrize(
    "bad",
    [{"input_tokens": 1000.0}, {"input_tokens": "1000"}, {"cache_creation": []}],
)
def test_unreadable_usage_stays_unpriced(bad):
    usage = {**stream.usage(input=1000, write_5m=4000), **bad}
    execution = record(
        [
            stream.message_start("msg_1", SONNET_46, usage),
            stream.message_delta(100),
            stream.message_stop(),
            stream.result(),
        ]
    )
    row = ApiMessage.objects.get(execution=execution)
    assert row.cost_usd is None
    assert execution.unpriced
    assert execution.estimated


def test_usage_from_assistant_when_start_has_none():
    start = stream.event(
        {"type": "message_start", "message": {"id": "msg_1", "model": SONNET_46}}
    )
    execution = record(
        [
            start,
            stream.assistant(
                "msg_1", SONNET_46, stream.usage(input=1000, write_5m=4000)
            ),
            stream.message_delta(100),
            stream.message_stop(),
            stream.result(),
        ]
    )
    assert execution.input_tokens == 1000
    assert execution.output_tokens == 100
    # 1,000 x $3 + 4,000 x $3.75 + 100 x $15.
    assert execution.cost_usd == Decimal("0.0195")
    assert not execution.unpriced


def test_repeated_start_keeps_delta_with_open_response():
    execution = record(
        [
            stream.message_start("msg_1", SONNET_46, stream.usage(input=10)),
            stream.message_delta(50),
            stream.message_stop(),
            stream.message_start("msg_2", SONNET_46, stream.usage(input=20)),
            stream.message_start("msg_1", SONNET_46, stream.usage(input=10)),
            stream.message_delta(80),
            stream.message_stop(),
            stream.result(),
        ]
    )
    assert execution.output_tokens == 130


def test_abandoned_response_is_estimated():
    abandoned_stop = stream.event({"type": "message_stop", "abandoned_blocks": [0]})
    execution = record(
        [
            stream.message_start(
                "msg_1", SONNET_46, stream.usage(input=3, write_5m=12000)
            ),
            stream.message_delta(1),
            abandoned_stop,
        ],
        interrupted=True,
    )
    assert execution.cost_usd == Decimal("0.045024")
    assert execution.estimated
    assert ApiMessage.objects.get(execution=execution).estimated


def test_negative_delta_is_ignored():
    execution = record(
        [
            stream.message_start("msg_1", SONNET_46, stream.usage(input=10)),
            stream.message_delta(-5),
            stream.message_delta(40),
            stream.message_stop(),
            stream.result(),
        ]
    )
    assert execution.output_tokens == 40
    assert execution.status == Execution.Status.SUCCEEDED


@pytest.mark.parametrize("reported", ["0.01", float("nan"), 1e300, -1.0])
def test_insane_reported_cost_is_dropped(reported):
    result = stream.result(total_cost_usd=reported)
    result.num_turns = -1
    execution = record([result])
    assert execution.reported_cost_usd is None
    assert execution.num_turns == 0
    assert execution.status == Execution.Status.SUCCEEDED


def test_api_error_message_is_not_a_cost():
    error = AssistantMessage(
        content=[TextBlock(text="API Error: 400 unknown scenario")],
        model="<synthetic>",
        usage={"input_tokens": 0, "output_tokens": 0},
        message_id="msg_synthetic",
        error="invalid_request",
    )
    execution = record(
        [error, stream.result(subtype="success", is_error=True)],
    )
    assert execution.api_message_count == 0
    assert not execution.unpriced
    assert execution.status == Execution.Status.FAILED
    assert "API Error: 400 unknown scenario" in execution.error


def test_reprice_waits_for_running_execution():
    unknown = "claude-unknown-9"
    execution = ExecutionFactory(requested_model=unknown)
    recorder = StreamRecorder(execution)
    recorder.start()
    for message in [
        stream.message_start("msg_1", unknown, stream.usage(input=1_000_000)),
        stream.message_delta(0),
        stream.message_stop(),
    ]:
        recorder.handle(message)
    ModelPrice.objects.create(
        model=unknown,
        valid_from="2020-01-01T00:00:00Z",
        input_per_mtok=Decimal("1"),
        output_per_mtok=Decimal("2"),
        cache_write_5m_per_mtok=Decimal("1.25"),
        cache_write_1h_per_mtok=Decimal("2"),
        cache_read_per_mtok=Decimal("0.1"),
    )
    during = reprice_unpriced()
    assert during.messages_repriced == 0
    assert during.executions_running == 1

    for message in [
        stream.message_start("msg_2", HAIKU_45, stream.usage(input=1_000_000)),
        stream.message_delta(0),
        stream.message_stop(),
        stream.result(),
    ]:
        recorder.handle(message)
    recorder.finish()
    after = reprice_unpriced()
    execution.refresh_from_db()
    assert after.messages_repriced == 1
    # 1M input at the new $1, and 1M Haiku 4.5 input at $1.
    assert execution.cost_usd == Decimal("2")
    assert not execution.unpriced
