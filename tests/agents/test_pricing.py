"""Tests of the cost engine.

Every expected cost is computed by hand from Anthropic's published rates per
million tokens (MTok), shown next to each case. Where Anthropic's table has
no rate (the cache rates of the Haiku 5.5 long-context band), the comment
names genai-prices 0.2.3 as the source.
"""

import logging
import socket
from datetime import UTC, date, datetime, time
from decimal import Decimal

import pytest

from agents.models import ModelPrice
from agents.pricing import PriceQuote, TokenUsage, engine, overrides, price_usage
from agents.pricing.bundled import GENAI_PRICES_VERSION

pytestmark = pytest.mark.django_db

# Later than every dated price change that genai-prices 0.2.3 lists for
# the models priced here.
AT = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def fresh_caches():
    # Rows of a rolled-back test send no post_delete, so clear by hand.
    overrides.clear_cache()
    engine._warned_unpriced.clear()
    yield
    overrides.clear_cache()


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail any connection that is not to this machine."""
    real_connect = socket.socket.connect

    def connect(sock, address):
        host = address[0] if isinstance(address, tuple) else address
        if sock.family in (socket.AF_INET, socket.AF_INET6) and host not in (
            "127.0.0.1",
            "::1",
            "localhost",
        ):
            raise AssertionError(f"pricing opened a connection to {address!r}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


def usage(**fields):
    """Build a Messages API usage object from short names."""
    api = {
        "input_tokens": fields.pop("input", 0),
        "output_tokens": fields.pop("output", 0),
        "cache_read_input_tokens": fields.pop("read", 0),
    }
    write_5m = fields.pop("write_5m", 0)
    write_1h = fields.pop("write_1h", 0)
    api["cache_creation_input_tokens"] = fields.pop("written", write_5m + write_1h)
    api["cache_creation"] = {
        "ephemeral_5m_input_tokens": write_5m,
        "ephemeral_1h_input_tokens": write_1h,
    }
    if "searches" in fields:
        api["server_tool_use"] = {"web_search_requests": fields.pop("searches")}
    api.update(fields)
    return TokenUsage.from_api(api)


def make_price(model, valid_from, **rates):
    defaults = {
        "input_per_mtok": Decimal("1"),
        "output_per_mtok": Decimal("2"),
        "cache_write_5m_per_mtok": Decimal("3"),
        "cache_write_1h_per_mtok": Decimal("4"),
        "cache_read_per_mtok": Decimal("0.5"),
    }
    defaults.update(rates)
    return ModelPrice.objects.create(model=model, valid_from=valid_from, **defaults)


# TokenUsage.from_api


def test_from_api_reads_every_field():
    parsed = TokenUsage.from_api(
        {
            "input_tokens": 10,
            "output_tokens": 20,
            "cache_creation_input_tokens": 300,
            "cache_creation": {
                "ephemeral_5m_input_tokens": 100,
                "ephemeral_1h_input_tokens": 200,
            },
            "cache_read_input_tokens": 40,
            "server_tool_use": {"web_search_requests": 2},
            "service_tier": "batch",
            "inference_geo": "us",
        }
    )
    assert parsed == TokenUsage(
        input_tokens=10,
        output_tokens=20,
        cache_write_5m_tokens=100,
        cache_write_1h_tokens=200,
        cache_read_tokens=40,
        web_search_requests=2,
        service_tier="batch",
        inference_geo="us",
        split_estimated=False,
    )


def test_from_api_missing_and_null_are_zero():
    parsed = TokenUsage.from_api(
        {
            "input_tokens": None,
            "cache_creation": None,
            "server_tool_use": None,
            "service_tier": None,
        }
    )
    assert parsed == TokenUsage()
    assert TokenUsage.from_api({}) == TokenUsage()


def test_from_api_absent_split_counts_as_5m():
    parsed = TokenUsage.from_api({"cache_creation_input_tokens": 500})
    assert parsed.cache_write_5m_tokens == 500
    assert parsed.cache_write_1h_tokens == 0
    assert parsed.split_estimated is True


def test_from_api_partial_split_rest_is_5m():
    parsed = TokenUsage.from_api(
        {
            "cache_creation_input_tokens": 100,
            "cache_creation": {
                "ephemeral_5m_input_tokens": 20,
                "ephemeral_1h_input_tokens": 60,
            },
        }
    )
    assert parsed.cache_write_5m_tokens == 40
    assert parsed.cache_write_1h_tokens == 60
    assert parsed.split_estimated is True


def test_from_api_split_over_aggregate_is_estimated():
    parsed = TokenUsage.from_api(
        {
            "cache_creation_input_tokens": 50,
            "cache_creation": {
                "ephemeral_5m_input_tokens": 20,
                "ephemeral_1h_input_tokens": 60,
            },
        }
    )
    assert parsed.cache_write_5m_tokens == 20
    assert parsed.cache_write_1h_tokens == 60
    assert parsed.split_estimated is True


def test_from_api_full_split_not_estimated():
    parsed = TokenUsage.from_api(
        {
            "cache_creation_input_tokens": 460,
            "cache_creation": {"ephemeral_5m_input_tokens": 460},
        }
    )
    assert parsed.cache_write_5m_tokens == 460
    assert parsed.split_estimated is False


@pytest.mark.parametrize(
    ("api_usage", "field_name"),
    [
        ({"input_tokens": -1}, "input_tokens"),
        ({"output_tokens": 1.5}, "output_tokens"),
        ({"output_tokens": "12"}, "output_tokens"),
        ({"cache_read_input_tokens": True}, "cache_read_input_tokens"),
        (
            {"cache_creation": {"ephemeral_1h_input_tokens": -5}},
            "cache_creation.ephemeral_1h_input_tokens",
        ),
        (
            {"server_tool_use": {"web_search_requests": 2.0}},
            "server_tool_use.web_search_requests",
        ),
        ({"cache_creation": [1, 2]}, "cache_creation"),
        ({"service_tier": 3}, "service_tier"),
    ],
)
def test_from_api_rejects_invalid_value(api_usage, field_name):
    with pytest.raises(ValueError, match=field_name):
        TokenUsage.from_api(api_usage)


def test_from_api_rejects_non_object():
    with pytest.raises(ValueError, match="expected a JSON object"):
        TokenUsage.from_api([1, 2])


def test_prompt_tokens_and_with_output():
    parsed = usage(input=1, read=10, write_5m=100, write_1h=1000, output=1)
    assert parsed.prompt_tokens == 1111
    assert parsed.with_output(87).output_tokens == 87
    assert parsed.with_output(87).prompt_tokens == 1111
    with pytest.raises(ValueError, match="output_tokens"):
        parsed.with_output(-1)


# Field cases


def test_one_hour_writes_priced_at_1h_rate():
    # Opus 4.6: input 5, 5m write 6.25, 1h write 10, read 0.50, output 25.
    # 10*5 + 2000*25 + 500000*0.5 + 20000*6.25 + 80000*10 = 1225050 / 1M
    quote = price_usage(
        "claude-opus-4-6",
        usage(input=10, output=2000, read=500000, write_5m=20000, write_1h=80000),
        AT,
    )
    assert quote.cost_usd == Decimal("1.22505")
    assert quote.estimated is False
    assert quote.breakdown["cache_write_1h"] == Decimal("0.8")
    assert quote.rates["cache_write_1h"] == Decimal("10")


def test_uncovered_cache_writes_priced_as_5m():
    # 40000 5m writes (20000 reported, 20000 uncovered) * 6.25 + 60000 * 10
    # + 10*5 + 2000*25 + 500000*0.5 = 1150050 / 1M
    quote = price_usage(
        "claude-opus-4-6",
        usage(
            input=10,
            output=2000,
            read=500000,
            written=100000,
            write_5m=20000,
            write_1h=60000,
        ),
        AT,
    )
    assert quote.cost_usd == Decimal("1.15005")
    assert quote.estimated is True


def test_cache_reads_priced_at_read_rate():
    # Sonnet 4.5: input 3, 5m write 3.75, read 0.30, output 15.
    # 6*3 + 460*3.75 + 30940*0.3 + 102*15 = 12555 / 1M
    quote = price_usage(
        "claude-sonnet-4-5", usage(input=6, write_5m=460, read=30940, output=102), AT
    )
    assert quote.cost_usd == Decimal("0.012555")
    assert quote.breakdown["cache_read"] == Decimal("0.009282")


def test_day_of_opus_4_7_usage():
    # Opus 4.7: 148807*5 + 899339*25 + 5147194*6.25 + 66485717*0.5
    # = 744035 + 22483475 + 32169962.5 + 33242858.5 = 88640331 / 1M
    quote = price_usage(
        "claude-opus-4-7",
        usage(input=148807, output=899339, write_5m=5147194, read=66485717),
        AT,
    )
    assert quote.status == "priced"
    assert quote.cost_usd == Decimal("88.640331")
    assert quote.source == "genai-prices"
    assert quote.version == GENAI_PRICES_VERSION


def test_unknown_model_is_unpriced_not_zero(caplog):
    with caplog.at_level(logging.WARNING, logger="agents.pricing.engine"):
        quote = price_usage(
            "claude-imaginary-9", usage(input=148807, output=899339), AT
        )
        price_usage("claude-imaginary-9", usage(input=1), AT)
    assert quote.status == "unpriced"
    assert quote.cost_usd is None
    assert quote.breakdown == {}
    assert quote.resolved_model == ""
    warnings = [r for r in caplog.records if "claude-imaginary-9" in r.getMessage()]
    assert len(warnings) == 1


def test_dated_id_uses_family_price():
    # Haiku 4.5: input 1, output 5. 30311*1 + 8631*5 = 73466 / 1M
    quote = price_usage(
        "claude-haiku-4-5-20251001", usage(input=30311, output=8631), AT
    )
    assert quote.cost_usd == Decimal("0.073466")
    assert quote.resolved_model == "claude-haiku-4-5"
    assert quote.model == "claude-haiku-4-5-20251001"


# Long-context bands


def test_haiku_5_5_band_prices_every_token():
    # Prompt 1000 + 1000 + 98001 = 100001 tokens, over 100k. Anthropic's band
    # rates are input 0.50 and output 2.50. The band's 5m write 0.625 and
    # read 0.05 come from genai-prices 0.2.3, five times the standard rates.
    # 1000*0.5 + 1000*0.625 + 98001*0.05 + 100*2.5 = 6275.05 / 1M
    quote = price_usage(
        "claude-haiku-5-5", usage(input=1000, write_5m=1000, read=98001, output=100), AT
    )
    assert quote.cost_usd == Decimal("0.00627505")
    assert quote.rates["cache_read"] == Decimal("0.05")
    assert quote.band is not None


def test_haiku_5_5_at_threshold_uses_base():
    # Prompt exactly 100000 is not over 100k: input 0.10, 5m write 0.125,
    # read 0.01, output 0.50. 1000*0.1 + 1000*0.125 + 98000*0.01 + 100*0.5
    # = 1255 / 1M
    quote = price_usage(
        "claude-haiku-5-5", usage(input=1000, write_5m=1000, read=98000, output=100), AT
    )
    assert quote.cost_usd == Decimal("0.001255")
    assert quote.band is None


def test_sonnet_4_5_over_200k():
    # Over 200k, Sonnet 4.5 bills input 6 and output 22.50 per MTok.
    # 200001*6 + 1000*22.5 = 1222506 / 1M
    quote = price_usage("claude-sonnet-4-5", usage(input=200001, output=1000), AT)
    assert quote.cost_usd == Decimal("1.222506")
    assert quote.band is not None


def test_sonnet_4_5_band_counts_cache_tokens():
    # Prompt 1 + 200000 read = 200001. Band read rate 0.60, output 22.50.
    # 1*6 + 200000*0.6 + 10*22.5 = 120231 / 1M
    quote = price_usage("claude-sonnet-4-5", usage(input=1, read=200000, output=10), AT)
    assert quote.cost_usd == Decimal("0.120231")


def test_sonnet_4_5_at_200k_uses_base():
    # 200000*3 + 1000*15 = 615000 / 1M
    quote = price_usage("claude-sonnet-4-5", usage(input=200000, output=1000), AT)
    assert quote.cost_usd == Decimal("0.615")
    assert quote.band is None


# Web search, batch and region


def test_web_searches_priced_per_thousand():
    # Sonnet 4.6: 100*3 + 50*15 = 1050 / 1M, plus 3 searches * 10 / 1000.
    quote = price_usage(
        "claude-sonnet-4-6", usage(input=100, output=50, searches=3), AT
    )
    assert quote.cost_usd == Decimal("0.03105")
    assert quote.breakdown["web_search"] == Decimal("0.03")
    assert quote.rates["web_search"] == Decimal("10")


def test_batch_tier_halves_token_rates():
    # Haiku 4.5 at half rates: 1M*0.5 + 1M*2.5 + 1M*0.05, and 1 search
    # still at 10 / 1000.
    quote = price_usage(
        "claude-haiku-4-5",
        usage(
            input=1_000_000,
            output=1_000_000,
            read=1_000_000,
            searches=1,
            service_tier="batch",
        ),
        AT,
    )
    assert quote.cost_usd == Decimal("3.06")
    assert quote.rates["input"] == Decimal("0.5")


def test_us_only_inference_costs_1_1x():
    # Opus 4.7: (1M*5 + 100000*25) / 1M * 1.1 = 8.25
    quote = price_usage(
        "claude-opus-4-7",
        usage(input=1_000_000, output=100_000, inference_geo="us"),
        AT,
    )
    assert quote.cost_usd == Decimal("8.25")


def test_batch_and_us_only_combine():
    # Opus 4.7: 1M * 5 * 0.5 * 1.1 = 2.75
    quote = price_usage(
        "claude-opus-4-7",
        usage(input=1_000_000, service_tier="batch", inference_geo="us"),
        AT,
    )
    assert quote.cost_usd == Decimal("2.75")


# Overrides


def test_override_beats_genai_prices():
    row = make_price("claude-sonnet-4-6", datetime(2026, 1, 1, tzinfo=UTC))
    # 1000*1 + 1000*2 = 3000 / 1M
    quote = price_usage("claude-sonnet-4-6", usage(input=1000, output=1000), AT)
    assert quote.cost_usd == Decimal("0.003")
    assert quote.source == "override"
    assert quote.version == f"override#{row.pk}@2026-01-01T00:00:00+00:00"
    assert quote.resolved_model == "claude-sonnet-4-6"


def test_exact_override_beats_family_override():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    make_price("claude-haiku-4-5", start, input_per_mtok=Decimal("7"))
    make_price("claude-haiku-4-5-20251001", start, input_per_mtok=Decimal("9"))

    exact = price_usage("claude-haiku-4-5-20251001", usage(input=1_000_000), AT)
    other_date = price_usage("claude-haiku-4-5-20260101", usage(input=1_000_000), AT)

    assert exact.cost_usd == Decimal("9")
    assert exact.resolved_model == "claude-haiku-4-5-20251001"
    assert other_date.cost_usd == Decimal("7")
    assert other_date.resolved_model == "claude-haiku-4-5"


def test_family_override_beats_exact_genai_prices():
    make_price(
        "claude-haiku-4-5",
        datetime(2026, 1, 1, tzinfo=UTC),
        input_per_mtok=Decimal("7"),
    )
    quote = price_usage("claude-haiku-4-5-20251001", usage(input=1_000_000), AT)
    assert quote.cost_usd == Decimal("7")
    assert quote.source == "override"


def test_future_override_not_applied():
    make_price(
        "claude-haiku-4-5",
        datetime(2027, 1, 1, tzinfo=UTC),
        input_per_mtok=Decimal("7"),
    )
    quote = price_usage("claude-haiku-4-5", usage(input=1_000_000), AT)
    assert quote.cost_usd == Decimal("1")
    assert quote.source == "genai-prices"


def test_history_priced_at_rate_then_valid():
    make_price(
        "claude-test-1",
        datetime(2026, 1, 1, tzinfo=UTC),
        cache_read_per_mtok=Decimal("1"),
    )
    make_price(
        "claude-test-1",
        datetime(2026, 6, 1, tzinfo=UTC),
        cache_read_per_mtok=Decimal("0.25"),
    )
    reads = usage(read=1_000_000)

    before = price_usage("claude-test-1", reads, datetime(2025, 12, 31, tzinfo=UTC))
    first = price_usage("claude-test-1", reads, datetime(2026, 3, 1, tzinfo=UTC))
    boundary = price_usage("claude-test-1", reads, datetime(2026, 6, 1, tzinfo=UTC))
    later = price_usage("claude-test-1", reads, AT)

    assert before.status == "unpriced"
    assert first.cost_usd == Decimal("1")
    assert boundary.cost_usd == Decimal("0.25")
    assert later.cost_usd == Decimal("0.25")


def test_override_long_context_band():
    make_price(
        "claude-test-2",
        datetime(2026, 1, 1, tzinfo=UTC),
        long_context_threshold_tokens=1000,
        long_context_input_per_mtok=Decimal("10"),
        long_context_cache_read_per_mtok=Decimal("5"),
    )
    # At the threshold: 500*1 + 500*0.5 + 100*2 = 950 / 1M
    at_threshold = price_usage(
        "claude-test-2", usage(input=500, read=500, output=100), AT
    )
    # Over it: 500*10 + 501*5 + 100*2 (no long-context output rate) = 7705 / 1M
    over = price_usage("claude-test-2", usage(input=500, read=501, output=100), AT)

    assert at_threshold.cost_usd == Decimal("0.00095")
    assert at_threshold.band is None
    assert over.cost_usd == Decimal("0.007705")
    assert over.band is not None


def test_saved_override_clears_cache():
    quote = price_usage("claude-test-3", usage(input=1_000_000), AT)
    assert quote.status == "unpriced"

    row = make_price("claude-test-3", datetime(2026, 1, 1, tzinfo=UTC))
    assert price_usage("claude-test-3", usage(input=1_000_000), AT).cost_usd == Decimal(
        "1"
    )

    row.delete()
    assert price_usage("claude-test-3", usage(input=1_000_000), AT).status == "unpriced"


# Model ids


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5"),
        ("us.anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5"),
        ("eu.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
        ("apac.anthropic.claude-3-haiku-20240307-v1:0", "claude-3-haiku"),
        ("global.anthropic.claude-opus-4-6-v1", "claude-opus-4-6"),
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
        ("claude-opus-4-7", "claude-opus-4-7"),
    ],
)
def test_family_id(model, family):
    assert engine.family_id(model) == family


@pytest.mark.parametrize(
    "model",
    [
        "anthropic.claude-haiku-4-5-20251001-v1:0",
        "us.anthropic.claude-haiku-4-5-20251001-v1:0",
        "global.anthropic.claude-haiku-4-5-20251001-v1:0",
        "claude-haiku-4-5@20251001",
    ],
)
def test_provider_ids_resolve(model):
    quote = price_usage(model, usage(input=30311, output=8631), AT)
    assert quote.cost_usd == Decimal("0.073466")
    assert quote.resolved_model == "claude-haiku-4-5"


def test_family_override_applies_to_bedrock_id():
    make_price(
        "claude-sonnet-4-5",
        datetime(2026, 1, 1, tzinfo=UTC),
        input_per_mtok=Decimal("8"),
    )
    quote = price_usage(
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0", usage(input=1_000_000), AT
    )
    assert quote.cost_usd == Decimal("8")
    assert quote.resolved_model == "claude-sonnet-4-5"


def test_prefix_of_other_model_not_matched():
    # genai-prices matches "claude-opus-4-10" to claude-opus-4-1 by prefix.
    quote = price_usage("claude-opus-4-10", usage(input=1000), AT)
    assert quote.status == "unpriced"


# Contract


def test_naive_time_rejected():
    with pytest.raises(ValueError, match="timezone-aware"):
        price_usage("claude-haiku-4-5", usage(input=1), datetime(2026, 1, 1))  # noqa: DTZ001


def test_quote_reports_all_kinds():
    quote = price_usage("claude-haiku-4-5", usage(input=1), AT)
    kinds = {
        "input",
        "output",
        "cache_write_5m",
        "cache_write_1h",
        "cache_read",
        "web_search",
    }
    assert isinstance(quote, PriceQuote)
    assert set(quote.breakdown) == kinds
    assert set(quote.rates) == kinds
    assert all(isinstance(value, Decimal) for value in quote.breakdown.values())


PUBLISHED_CASES = [
    # Sonnet 4 above 200k: every token at the band rates (6 input, 22.50 output).
    (
        "claude-sonnet-4-20250514",
        {"input_tokens": 210_000, "output_tokens": 1000},
        "1.2825",
    ),
    # At 200k exactly the standard rates (3 input, 15 output) apply.
    ("claude-sonnet-4", {"input_tokens": 200_000, "output_tokens": 1000}, "0.615"),
    ("anthropic.claude-sonnet-4-20250514-v1:0", {"input_tokens": 1000}, "0.003"),
    # Mythos 5.1: 10 input, 0.25 cache read, 50 output.
    (
        "claude-mythos-5-1",
        {
            "input_tokens": 1000,
            "cache_read_input_tokens": 100_000,
            "output_tokens": 1000,
        },
        "0.085",
    ),
    # Mythos 5: cache reads at 1.
    ("claude-mythos-5", {"cache_read_input_tokens": 100_000}, "0.1"),
]


@pytest.mark.parametrize(("model", "usage", "expected"), PUBLISHED_CASES)
def test_published_rates_fill_bundled_gaps(model, usage, expected):
    quote = price_usage(
        model, TokenUsage.from_api(usage), datetime(2026, 12, 1, tzinfo=UTC)
    )
    assert quote.status == "priced"
    assert quote.source == "published"
    assert quote.cost_usd == Decimal(expected)


def test_fast_mode_uses_fast_rates():
    usage = TokenUsage.from_api(
        {"input_tokens": 1000, "output_tokens": 1000, "speed": "fast"}
    )
    quote = price_usage("claude-opus-5", usage, datetime(2026, 12, 1, tzinfo=UTC))
    # genai-prices 0.2.3 fast mode for Opus 5: $10 input, $50 output per MTok.
    assert quote.cost_usd == Decimal("0.06")
    assert not quote.estimated


def test_fast_mode_with_override_is_estimated():
    ModelPrice.objects.create(
        model="claude-opus-5",
        valid_from=datetime(2020, 1, 1, tzinfo=UTC),
        input_per_mtok=Decimal("5"),
        output_per_mtok=Decimal("25"),
        cache_write_5m_per_mtok=Decimal("6.25"),
        cache_write_1h_per_mtok=Decimal("10"),
        cache_read_per_mtok=Decimal("0.5"),
    )
    usage = TokenUsage.from_api({"input_tokens": 1000, "speed": "fast"})
    quote = price_usage("claude-opus-5", usage, datetime(2026, 12, 1, tzinfo=UTC))
    assert quote.source == "override"
    assert quote.estimated


# Remembered resolutions


def test_remembered_rates_change_at_an_override_boundary():
    """The rates found for a model are reused only between two price changes."""
    start = datetime(2027, 1, 1, tzinfo=UTC)
    make_price("claude-haiku-4-5", start, input_per_mtok=Decimal("7"))
    million = usage(input=1_000_000)
    moments = [
        datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        start,
        datetime(2026, 12, 31, tzinfo=UTC),
        datetime(2027, 3, 1, tzinfo=UTC),
        datetime(2026, 12, 1, tzinfo=UTC),
    ]
    sources = [price_usage("claude-haiku-4-5", million, at).source for at in moments]
    costs = [price_usage("claude-haiku-4-5", million, at).cost_usd for at in moments]
    assert sources == [
        "genai-prices",
        "override",
        "genai-prices",
        "override",
        "genai-prices",
    ]
    assert costs == [Decimal(1), Decimal(7), Decimal(1), Decimal(7), Decimal(1)]


def test_remembered_rates_follow_a_new_override():
    million = usage(input=1_000_000)
    assert price_usage("claude-haiku-4-5", million, AT).cost_usd == Decimal(1)
    make_price(
        "claude-haiku-4-5",
        datetime(2026, 1, 1, tzinfo=UTC),
        input_per_mtok=Decimal("7"),
    )
    assert price_usage("claude-haiku-4-5", million, AT).cost_usd == Decimal(7)


def test_genai_prices_change_times():
    from genai_prices.types import (
        ClauseEquals,
        ConditionalPrice,
        ModelInfo,
        StartDateConstraint,
        TimeOfDateConstraint,
    )
    from genai_prices.types import ModelPrice as GenaiPrice

    from agents.pricing import bundled

    def model(*constraints):
        return ModelInfo(
            id="m",
            match=ClauseEquals(equals="m"),
            prices=[
                ConditionalPrice(constraint=constraint, prices=GenaiPrice())
                for constraint in constraints
            ],
        )

    dated = model(None, StartDateConstraint(start_date=date(2027, 2, 1)))
    by_hour = model(None, TimeOfDateConstraint(start_time=time(16), end_time=time(23)))
    assert bundled.price_change_times(dated) == [datetime(2027, 2, 1, tzinfo=UTC)]
    assert bundled.price_change_times(by_hour) is None
    assert bundled.price_change_times(model(None)) == []
