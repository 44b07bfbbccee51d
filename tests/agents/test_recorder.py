import itertools
from decimal import Decimal

import pytest

from agents.models import TOKEN_COUNT_FIELDS, ApiMessage, Execution, ModelPrice
from agents.recorder import Contribution, RunningTotals, StreamRecorder
from tests.agents import stream
from tests.factories import ExecutionFactory

pytestmark = pytest.mark.django_db

SONNET_46 = "claude-sonnet-4-6"
SONNET_37 = "claude-3-7-sonnet-20250219"


def record(messages, *, execution=None, finish=True, **finish_options):
    execution = execution or ExecutionFactory(requested_model=SONNET_46)
    recorder = StreamRecorder(execution)
    recorder.start()
    for message in messages:
        recorder.handle(message)
    if finish:
        recorder.finish(**finish_options)
    execution.refresh_from_db()
    return execution


def test_response_split_into_blocks_counts_once():
    usage_a = stream.usage(input=4, write_5m=15178, output=120)
    usage_b = stream.usage(input=6, write_5m=200, read=15178, output=80)
    execution = record(
        [
            stream.assistant("msg_A", SONNET_37, usage_a),
            stream.assistant("msg_A", SONNET_37, usage_a, tool=True),
            stream.assistant("msg_B", SONNET_37, usage_b),
            stream.result(num_turns=2, model_usage={SONNET_37: {"outputTokens": 200}}),
        ]
    )
    assert execution.api_message_count == 2
    assert execution.cost_usd == Decimal("0.0652509")
    assert execution.output_tokens == 200
    assert execution.status == Execution.Status.SUCCEEDED
    assert not execution.estimated


def test_output_taken_from_last_message_delta():
    start_1 = stream.usage(input=3, write_5m=4000, output=1)
    start_2 = stream.usage(input=2, write_5m=150, read=4000, output=1)
    execution = record(
        [
            stream.message_start("msg_1", SONNET_46, start_1),
            stream.assistant("msg_1", SONNET_46, start_1),
            stream.assistant("msg_1", SONNET_46, start_1, tool=True),
            stream.message_delta(40),
            stream.message_delta(87),
            stream.message_stop(),
            stream.message_start("msg_2", SONNET_46, start_2),
            stream.assistant("msg_2", SONNET_46, start_2),
            stream.message_delta(240),
            stream.message_stop(),
            stream.result(num_turns=2, model_usage={SONNET_46: {"outputTokens": 327}}),
        ]
    )
    assert execution.output_tokens == 327
    assert execution.cost_usd == Decimal("0.0216825")
    outputs = list(execution.api_messages.values_list("output_tokens", "output_final"))
    assert outputs == [(87, True), (240, True)]
    assert not execution.estimated


def test_interrupted_run_keeps_started_response():
    execution = record(
        [
            stream.message_start(
                "msg_1", SONNET_46, stream.usage(input=3, write_5m=12000)
            ),
            stream.text_delta(),
            stream.message_delta(850),
        ],
        interrupted=True,
    )
    assert execution.status == Execution.Status.INTERRUPTED
    assert execution.cost_usd == Decimal("0.057759")
    assert execution.finished_at is not None


def test_crash_before_delta_leaves_prompt_cost_committed():
    execution = ExecutionFactory(requested_model=SONNET_46)
    record(
        [
            stream.message_start(
                "msg_1", SONNET_46, stream.usage(input=3, write_5m=12000)
            )
        ],
        execution=execution,
        finish=False,
    )
    execution.refresh_from_db()
    assert execution.status == Execution.Status.RUNNING
    assert execution.cost_usd == Decimal("0.045024")
    row = ApiMessage.objects.get(execution=execution)
    assert row.output_tokens == 1
    assert not row.output_final


def test_unfinished_response_is_estimated_at_finish():
    execution = record(
        [
            stream.message_start(
                "msg_1", SONNET_46, stream.usage(input=3, write_5m=12000)
            )
        ],
        error="connection reset",
    )
    assert execution.status == Execution.Status.FAILED
    assert execution.cost_usd == Decimal("0.045024")
    assert execution.estimated
    assert execution.error == "connection reset"


def test_unknown_model_is_unpriced_not_free():
    model = "claude-imaginary-9"
    execution = record(
        [
            stream.message_start("msg_1", model, stream.usage(input=1000, output=1)),
            stream.message_delta(500),
            stream.message_stop(),
            stream.result(),
        ]
    )
    row = ApiMessage.objects.get(execution=execution)
    assert row.cost_usd is None
    assert row.input_tokens == 1000
    assert row.output_tokens == 500
    assert execution.unpriced
    assert execution.status == Execution.Status.SUCCEEDED


def test_priced_by_model_that_answered():
    usage = stream.usage(input=1_000_000, output=1)
    execution = record(
        [
            stream.message_start("msg_1", "claude-haiku-4-5-20251001", usage),
            stream.message_delta(0),
            stream.message_stop(),
        ]
    )
    assert execution.requested_model == SONNET_46
    assert execution.cost_usd == Decimal("1")


def test_subagent_responses_count():
    parent = "toolu_task_1"
    execution = record(
        [
            stream.message_start("msg_1", SONNET_46, stream.usage(input=10)),
            stream.message_start(
                "msg_sub", "claude-haiku-4-5", stream.usage(input=20), parent=parent
            ),
            stream.message_delta(100, parent=parent),
            stream.message_stop(parent=parent),
            stream.message_delta(50),
            stream.message_stop(),
            stream.result(num_turns=1),
        ]
    )
    rows = {row.message_id: row for row in execution.api_messages.all()}
    assert rows["msg_sub"].parent_tool_use_id == parent
    assert rows["msg_sub"].output_tokens == 100
    assert rows["msg_1"].output_tokens == 50
    assert execution.output_tokens == 150
    assert execution.input_tokens == 30


def test_result_totals_fill_missing_outputs():
    usage = stream.usage(input=100, output=1)
    execution = record(
        [
            stream.assistant("msg_1", SONNET_46, usage),
            stream.assistant("msg_2", SONNET_46, usage),
            stream.assistant("msg_3", SONNET_46, usage),
            stream.result(num_turns=3, model_usage={SONNET_46: {"outputTokens": 1000}}),
        ]
    )
    outputs = list(execution.api_messages.values_list("output_tokens", flat=True))
    assert outputs == [333, 333, 334]
    assert execution.output_tokens == 1000
    assert execution.estimated
    # 300 input at $3 and 1000 output at $15 per million.
    assert execution.cost_usd == Decimal("0.0159")


def test_reported_cost_difference_stored():
    execution = record(
        [
            stream.message_start("msg_1", SONNET_46, stream.usage(input=1000)),
            stream.message_delta(1000),
            stream.message_stop(),
            stream.result(
                total_cost_usd=0.02, model_usage={SONNET_46: {"outputTokens": 1000}}
            ),
        ]
    )
    assert execution.cost_usd == Decimal("0.018")
    assert execution.reported_cost_usd == Decimal("0.02")
    assert execution.cost_difference_usd == Decimal("-0.002")


@pytest.mark.parametrize(
    ("result_options", "interrupted", "output_final"),
    [
        ({"subtype": "success"}, False, True),
        (
            {
                "subtype": "error_during_execution",
                "terminal_reason": "aborted_streaming",
                "is_error": True,
            },
            False,
            False,
        ),
        ({"subtype": "error_during_execution", "is_error": True}, True, False),
    ],
)
def test_result_confirms_counts_unless_interrupted(
    result_options, interrupted, output_final
):
    """A cut-off response's one streamed token is not its final count."""
    execution = ExecutionFactory(requested_model=SONNET_46)
    recorder = StreamRecorder(execution)
    recorder.start()
    recorder.interrupt_requested = interrupted
    for message in [
        stream.message_start("msg_1", SONNET_46, stream.usage(input=100, output=1)),
        stream.result(model_usage={SONNET_46: {"outputTokens": 1}}, **result_options),
    ]:
        recorder.handle(message)
    recorder.finish()
    row = ApiMessage.objects.get(execution=execution)
    assert row.output_tokens == 1
    assert row.output_final is output_final
    assert row.estimated is not output_final
    execution.refresh_from_db()
    assert execution.estimated is not output_final


@pytest.mark.parametrize(
    ("interrupted", "stop_reason", "output_final"),
    [
        (False, None, True),
        (True, "end_turn", True),
        (True, None, False),
    ],
)
def test_closing_delta_after_interrupt_not_final(
    interrupted, stop_reason, output_final
):
    """The CLI closes a cut-off response with a delta without a stop reason."""
    execution = ExecutionFactory(requested_model=SONNET_46)
    recorder = StreamRecorder(execution)
    recorder.start()
    recorder.handle(
        stream.message_start("msg_1", SONNET_46, stream.usage(input=100, output=1))
    )
    recorder.interrupt_requested = interrupted
    recorder.handle(stream.message_delta(1, stop_reason=stop_reason))
    recorder.handle(stream.message_stop())
    recorder.finish(interrupted=interrupted)
    row = ApiMessage.objects.get(execution=execution)
    assert row.output_tokens == 1
    assert row.output_final is output_final
    assert row.estimated is not output_final


def test_unpriced_run_has_no_cost_difference():
    """Only the priced part is known, so no difference from the SDK's figure."""
    execution = record(
        [
            stream.message_start("msg_1", SONNET_46, stream.usage(input=1000)),
            stream.message_delta(1000),
            stream.message_stop(),
            stream.message_start("msg_2", "claude-imaginary-9", stream.usage(input=10)),
            stream.message_delta(20),
            stream.message_stop(),
            stream.result(total_cost_usd=0.05),
        ]
    )
    assert execution.unpriced is True
    assert execution.cost_usd == Decimal("0.018")
    assert execution.reported_cost_usd == Decimal("0.05")
    assert execution.cost_difference_usd is None
    execution.refresh_from_db()
    assert execution.cost_difference_usd is None


@pytest.mark.parametrize(
    ("subtype", "terminal_reason", "status"),
    [
        ("success", None, Execution.Status.SUCCEEDED),
        ("error_max_turns", None, Execution.Status.MAX_TURNS),
        ("error_max_budget_usd", None, Execution.Status.BUDGET_EXCEEDED),
        ("error_during_execution", "aborted_streaming", Execution.Status.INTERRUPTED),
        ("error_during_execution", None, Execution.Status.FAILED),
    ],
)
def test_result_subtype_sets_status(subtype, terminal_reason, status):
    execution = record(
        [
            stream.result(
                subtype=subtype,
                is_error=subtype != "success",
                terminal_reason=terminal_reason,
            )
        ]
    )
    assert execution.status == status


def test_replayed_stream_changes_nothing():
    messages = [
        stream.message_start("msg_1", SONNET_46, stream.usage(input=3, write_5m=4000)),
        stream.message_delta(87),
        stream.message_stop(),
        stream.result(),
    ]
    execution = record(messages)
    first_cost = execution.cost_usd
    replayed = record(messages, execution=execution)
    assert replayed.cost_usd == first_cost
    assert replayed.api_message_count == 1
    assert ApiMessage.objects.filter(execution=execution).count() == 1


def test_override_price_applies_to_recording():
    ModelPrice.objects.create(
        model="claude-sonnet-4-6",
        valid_from="2020-01-01T00:00:00Z",
        input_per_mtok=Decimal("1"),
        output_per_mtok=Decimal("2"),
        cache_write_5m_per_mtok=Decimal("1.25"),
        cache_write_1h_per_mtok=Decimal("2"),
        cache_read_per_mtok=Decimal("0.1"),
    )
    execution = record(
        [
            stream.message_start("msg_1", SONNET_46, stream.usage(input=1_000_000)),
            stream.message_delta(1_000_000),
            stream.message_stop(),
        ]
    )
    assert execution.cost_usd == Decimal("3")
    assert ApiMessage.objects.get(execution=execution).price_source == "override"


def test_listener_sees_each_complete_message(django_capture_on_commit_callbacks):
    seen = []
    execution = ExecutionFactory(requested_model=SONNET_46)
    recorder = StreamRecorder(execution, listener=seen.append)
    with django_capture_on_commit_callbacks(execute=True):
        for message in [
            stream.message_start("msg_1", SONNET_46, stream.usage(input=1000)),
            stream.message_delta(100),
            stream.message_stop(),
            stream.message_start("msg_2", SONNET_46, stream.usage(input=2000)),
            stream.message_delta(10),
            stream.message_stop(),
        ]:
            recorder.handle(message)
    complete = [update for update in seen if update.complete]
    assert [update.message.message_id for update in complete] == ["msg_1", "msg_2"]
    assert complete[0].running_cost_usd == Decimal("0.0045")
    assert complete[1].running_cost_usd == Decimal("0.01065")


def test_model_from_late_assistant_message_is_stored():
    """A response whose model arrives after its final count is priced by that model."""
    no_model = stream.usage(input=1000)
    execution = record(
        [
            stream.message_start("msg_1", "", no_model),
            stream.message_delta(100),
            stream.message_stop(),
            stream.assistant("msg_1", SONNET_46, no_model),
            stream.result(),
        ]
    )
    row = ApiMessage.objects.get(execution=execution)
    assert row.model == SONNET_46
    # 1,000 input at $3 and 100 output at $15 per MTok.
    assert row.cost_usd == Decimal("0.0045")
    assert execution.cost_usd == Decimal("0.0045")
    assert not execution.unpriced


CONTRIBUTIONS = [
    Contribution((100, 1, 0, 0, 5000, 0), Decimal("0.0018"), False),
    Contribution((100, 250, 0, 0, 5000, 0), Decimal("0.0055"), False),
    Contribution((100, 250, 0, 0, 5000, 1), Decimal("0.0155"), True),
    Contribution((100, 250, 0, 0, 5000, 0), None, False),
    Contribution((7, 3, 2048, 1024, 0, 0), None, True),
]


@pytest.mark.parametrize(
    "previous, current", list(itertools.product(CONTRIBUTIONS, repeat=2))
)
def test_replace_matches_remove_then_add(previous, current):
    """RunningTotals.replace() is a one-pass apply(previous, -1) and apply(current, +1)."""
    base = Contribution((1, 2, 3, 4, 5, 6), Decimal("1.5"), True)
    replaced, reapplied = RunningTotals(), RunningTotals()
    for totals in (replaced, reapplied):
        totals.apply(base, +1)
        totals.apply(previous, +1)
    replaced.replace(previous, current)
    reapplied.apply(previous, -1)
    reapplied.apply(current, +1)
    assert replaced == reapplied
    assert list(replaced.tokens) == list(TOKEN_COUNT_FIELDS)
    assert replaced.tokens["output_tokens"] == 2 + current.counts[1]
