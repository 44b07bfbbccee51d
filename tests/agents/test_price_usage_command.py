import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from agents.models import ModelPrice
from agents.pricing import overrides
from agents.pricing.bundled import GENAI_PRICES_VERSION

pytestmark = pytest.mark.django_db

HAIKU_USAGE = json.dumps({"input_tokens": 30311, "output_tokens": 8631})


@pytest.fixture(autouse=True)
def fresh_override_cache():
    overrides.clear_cache()
    yield
    overrides.clear_cache()


def run(*args, stdin=None):
    output = StringIO()
    call_command("price_usage", *args, stdout=output, stdin=stdin)
    return json.loads(output.getvalue())


def test_prints_quote_as_json():
    quote = run(
        "--model",
        "claude-haiku-4-5-20251001",
        "--at",
        "2026-12-01T00:00:00Z",
        HAIKU_USAGE,
    )
    assert quote == {
        "model": "claude-haiku-4-5-20251001",
        "resolved_model": "claude-haiku-4-5",
        "status": "priced",
        # 30311*1 + 8631*5 = 73466 / 1M
        "cost_usd": "0.073466",
        "breakdown": {
            "input": "0.030311",
            "output": "0.043155",
            "cache_write_5m": "0",
            "cache_write_1h": "0",
            "cache_read": "0",
            "web_search": "0",
        },
        "rates": {
            "input": "1",
            "output": "5",
            "cache_write_5m": "1.25",
            "cache_write_1h": "2",
            "cache_read": "0.1",
            "web_search": "10",
        },
        "source": "genai-prices",
        "version": GENAI_PRICES_VERSION,
        "estimated": False,
        "band": None,
        "at": "2026-12-01T00:00:00+00:00",
    }


def test_reads_usage_from_stdin():
    quote = run("--model", "claude-haiku-4-5", "-", stdin=StringIO(HAIKU_USAGE))
    assert quote["cost_usd"] == "0.073466"


def test_naive_at_is_utc():
    quote = run(
        "--model", "claude-haiku-4-5", "--at", "2026-03-01T12:30:00", HAIKU_USAGE
    )
    assert quote["at"] == "2026-03-01T12:30:00+00:00"


def test_at_keeps_its_offset():
    quote = run(
        "--model", "claude-haiku-4-5", "--at", "2026-03-01T12:30:00+02:00", HAIKU_USAGE
    )
    assert quote["at"] == "2026-03-01T12:30:00+02:00"


def test_at_defaults_to_now():
    quote = run("--model", "claude-haiku-4-5", HAIKU_USAGE)
    at = datetime.fromisoformat(quote["at"])
    assert abs(datetime.now(UTC) - at) < timedelta(minutes=1)


def test_estimated_split_reported():
    usage = json.dumps({"input_tokens": 1, "cache_creation_input_tokens": 100})
    quote = run("--model", "claude-haiku-4-5", "--at", "2026-12-01", usage)
    assert quote["estimated"] is True
    # 1*1 + 100*1.25 = 126 / 1M
    assert quote["cost_usd"] == "0.000126"


def test_override_version_shown():
    row = ModelPrice.objects.create(
        model="claude-haiku-4-5",
        valid_from=datetime(2026, 1, 1, tzinfo=UTC),
        input_per_mtok=Decimal("2"),
        output_per_mtok=Decimal("10"),
        cache_write_5m_per_mtok=Decimal("2.5"),
        cache_write_1h_per_mtok=Decimal("4"),
        cache_read_per_mtok=Decimal("0.2"),
    )
    quote = run("--model", "claude-haiku-4-5", "--at", "2026-12-01", HAIKU_USAGE)
    assert quote["source"] == "override"
    assert quote["version"] == f"override#{row.pk}@2026-01-01T00:00:00+00:00"
    # 30311*2 + 8631*10 = 146932 / 1M
    assert quote["cost_usd"] == "0.146932"


def test_unknown_model_prints_null_cost():
    quote = run("--model", "claude-imaginary-9", HAIKU_USAGE)
    assert quote["status"] == "unpriced"
    assert quote["cost_usd"] is None
    assert quote["resolved_model"] is None
    assert quote["source"] is None
    assert quote["breakdown"] == {}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{not json"], "Invalid USAGE_JSON '{not json'"),
        (["[1, 2]"], "expected a JSON object, got list"),
        (['{"input_tokens": -3}'], "input_tokens must not be negative, got -3"),
        (['{"output_tokens": 1.5}'], "output_tokens must be an integer, got 1.5"),
        (['{"output_tokens": "12"}'], "output_tokens must be an integer, got '12'"),
        (["--at", "yesterday", "{}"], "Invalid --at value 'yesterday'"),
        (
            ["--at", "2026-13-45T00:00:00", "{}"],
            "Invalid --at value '2026-13-45T00:00:00'",
        ),
    ],
)
def test_invalid_input_raises_command_error(args, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        call_command(
            "price_usage", "--model", "claude-haiku-4-5", *args, stdout=StringIO()
        )


@pytest.mark.parametrize("model", ["", "   "])
def test_empty_model_rejected(model):
    with pytest.raises(CommandError, match="--model is empty"):
        run("--model", model, '{"input_tokens": 1}')
