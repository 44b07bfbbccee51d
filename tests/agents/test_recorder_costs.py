"""The recorder prices a new output count from the response's first quote."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from agents.models import ApiMessage, ModelPrice
from agents.pricing import TokenUsage, price_usage
from agents.recorder import StreamRecorder, _cost_with_output, _output_repriceable
from tests.agents import stream
from tests.factories import ExecutionFactory

AT = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("model", "usage"),
    [
        ("claude-sonnet-4-6", TokenUsage(input_tokens=300, cache_read_tokens=40_000)),
        # Over Sonnet 4.5's 200k band: every line at the long-context rates.
        (
            "claude-sonnet-4-5-20250929",
            TokenUsage(input_tokens=5, cache_read_tokens=210_000, output_tokens=1),
        ),
        ("claude-haiku-4-5", TokenUsage(input_tokens=7, service_tier="batch")),
        ("claude-opus-4-6", TokenUsage(input_tokens=9, inference_geo="us")),
        (
            "claude-sonnet-4",
            TokenUsage(input_tokens=3, cache_write_1h_tokens=250_000, output_tokens=2),
        ),
    ],
)
@pytest.mark.django_db
def test_cost_with_output_matches_full_pricing(model, usage):
    usage = usage.with_output(max(usage.output_tokens, 1))
    quote = price_usage(model, usage, AT)
    assert _output_repriceable(quote)
    for output in (0, 1, 977, 64_000):
        expected = price_usage(model, usage.with_output(output), AT).cost_usd
        assert _cost_with_output(quote, output) == expected


@pytest.mark.django_db
def test_unpriced_or_outputless_quote_not_reused():
    unpriced = price_usage("claude-imaginary-9", TokenUsage(input_tokens=5), AT)
    assert not _output_repriceable(unpriced)
    no_output = price_usage("claude-sonnet-4-6", TokenUsage(input_tokens=5), AT)
    assert not _output_repriceable(no_output)


@pytest.mark.django_db
def test_final_count_priced_at_start_override():
    ModelPrice.objects.create(
        model="claude-sonnet-4-6",
        valid_from="2020-01-01T00:00:00Z",
        input_per_mtok=Decimal("1"),
        output_per_mtok=Decimal("2"),
        cache_write_5m_per_mtok=Decimal("1.25"),
        cache_write_1h_per_mtok=Decimal("2"),
        cache_read_per_mtok=Decimal("0.1"),
    )
    execution = ExecutionFactory(requested_model="claude-sonnet-4-6")
    recorder = StreamRecorder(execution)
    for message in [
        stream.message_start(
            "msg_1", "claude-sonnet-4-6", stream.usage(input=1_000_000, output=1)
        ),
        stream.message_delta(500_000),
        stream.message_stop(),
    ]:
        recorder.handle(message)
    recorder.finish()
    row = ApiMessage.objects.get(execution=execution)
    # 1M input at $1 and 0.5M output at $2.
    assert row.cost_usd == Decimal("2")
    assert row.price_source == "override"
