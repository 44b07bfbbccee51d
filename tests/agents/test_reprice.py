import importlib
from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO

import pytest
from django.apps import apps as django_apps
from django.core.management import call_command

from agents.models import ApiMessage, Execution, ModelPrice
from agents.pricing import overrides, reprice
from agents.pricing.reprice import reprice_unpriced
from agents.services import execution_refresh_totals
from tests.factories import ExecutionFactory

pytestmark = pytest.mark.django_db

UNKNOWN = "claude-test-9"
HAIKU = "claude-haiku-4-5"
ARRIVED = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def fresh_override_cache():
    overrides.clear_cache()
    yield
    overrides.clear_cache()


def add_message(execution, model, *, cost=None, arrived_at=ARRIVED, **tokens):
    sequence = execution.api_messages.count() + 1
    return ApiMessage.objects.create(
        execution=execution,
        message_id=f"msg_{execution.pk}_{sequence}",
        sequence=sequence,
        model=model,
        cost_usd=cost,
        arrived_at=arrived_at,
        **tokens,
    )


def add_price(model, valid_from, **rates):
    values = {
        "input_per_mtok": Decimal("2"),
        "output_per_mtok": Decimal("10"),
        "cache_write_5m_per_mtok": Decimal("2.5"),
        "cache_write_1h_per_mtok": Decimal("4"),
        "cache_read_per_mtok": Decimal("0.2"),
    }
    values.update(rates)
    return ModelPrice.objects.create(model=model, valid_from=valid_from, **values)


def unpriced_execution(**fields):
    """An execution with one priced Haiku 4.5 message and one of an unknown model."""
    execution = ExecutionFactory(
        requested_model=UNKNOWN,
        cost_usd=Decimal("0.073466"),
        unpriced=True,
        **fields,
    )
    add_message(
        execution,
        HAIKU,
        cost=Decimal("0.073466"),
        input_tokens=30311,
        output_tokens=8631,
    )
    add_message(
        execution,
        UNKNOWN,
        input_tokens=1000,
        output_tokens=2000,
        cache_write_5m_tokens=4000,
        cache_read_tokens=10000,
    )
    return execution


def test_command_prices_execution_after_price_added():
    execution = unpriced_execution(reported_cost_usd=Decimal("0.09"))
    row = add_price(UNKNOWN, datetime(2026, 11, 1, tzinfo=UTC))
    output = StringIO()

    call_command("reprice_usage", stdout=output)

    message = execution.api_messages.get(model=UNKNOWN)
    # 1000*2 + 2000*10 + 4000*2.5 + 10000*0.2 = 34000 / 1M
    assert message.cost_usd == Decimal("0.034")
    assert message.price_source == "override"
    assert message.price_version == f"override#{row.pk}@2026-11-01T00:00:00+00:00"
    execution.refresh_from_db()
    assert execution.cost_usd == Decimal("0.107466")
    assert execution.unpriced is False
    assert execution.cost_difference_usd == Decimal("0.017466")
    assert "Messages repriced: 1" in output.getvalue()
    assert "Executions updated: 1" in output.getvalue()


def test_refreshed_unpriced_totals_have_no_difference():
    execution = unpriced_execution(reported_cost_usd=Decimal("0.09"))

    execution_refresh_totals(execution)

    execution.refresh_from_db()
    assert execution.unpriced is True
    assert execution.cost_usd == Decimal("0.073466")
    assert execution.cost_difference_usd is None


def test_message_before_price_start_stays_unpriced():
    execution = unpriced_execution()
    add_price(UNKNOWN, datetime(2027, 1, 1, tzinfo=UTC))

    result = reprice_unpriced()

    assert result.messages_repriced == 0
    assert result.messages_still_unpriced == 1
    assert result.executions_updated == 0
    assert result.unpriced_models == (UNKNOWN,)
    execution.refresh_from_db()
    assert execution.unpriced is True
    assert execution.cost_usd == Decimal("0.073466")


def test_command_lists_models_still_unpriced():
    unpriced_execution()
    output = StringIO()

    call_command("reprice_usage", stdout=output)

    assert "Messages still unpriced: 1" in output.getvalue()
    assert f"Models still without a price: {UNKNOWN}" in output.getvalue()


def test_command_names_price_starting_after_messages():
    unpriced_execution()
    add_price(UNKNOWN, datetime(2027, 1, 1, tzinfo=UTC))
    output = StringIO()

    call_command("reprice_usage", stdout=output)

    text = output.getvalue()
    assert "Messages still unpriced: 1" in text
    assert (
        f"{UNKNOWN}: its ModelPrice rows start at 2027-01-01T00:00:00+00:00, "
        f"after its first unpriced message ({ARRIVED.isoformat()})"
    ) in text
    assert "Models still without a price" not in text


def test_without_reported_cost_difference_stays_empty():
    execution = unpriced_execution()
    add_price(UNKNOWN, datetime(2026, 11, 1, tzinfo=UTC))

    reprice_unpriced()

    execution.refresh_from_db()
    assert execution.cost_difference_usd is None
    assert execution.cost_usd == Decimal("0.107466")


def test_model_option_limits_scope():
    execution = unpriced_execution()
    other = add_message(execution, "claude-test-8", input_tokens=1_000_000)
    add_price(UNKNOWN, datetime(2026, 11, 1, tzinfo=UTC))
    add_price("claude-test-8", datetime(2026, 11, 1, tzinfo=UTC))

    result = reprice_unpriced(model=UNKNOWN)

    other.refresh_from_db()
    assert result.messages_repriced == 1
    assert other.cost_usd is None
    execution.refresh_from_db()
    assert execution.unpriced is True
    assert execution.cost_usd == Decimal("0.107466")


def test_each_message_priced_at_its_own_time():
    execution = ExecutionFactory(requested_model=UNKNOWN, unpriced=True)
    add_price(UNKNOWN, datetime(2026, 1, 1, tzinfo=UTC), input_per_mtok=Decimal("4"))
    add_price(UNKNOWN, datetime(2026, 6, 1, tzinfo=UTC), input_per_mtok=Decimal("3"))
    march = add_message(
        execution,
        UNKNOWN,
        input_tokens=1_000_000,
        arrived_at=datetime(2026, 3, 1, tzinfo=UTC),
    )
    july = add_message(
        execution,
        UNKNOWN,
        input_tokens=1_000_000,
        arrived_at=datetime(2026, 7, 1, tzinfo=UTC),
    )

    reprice_unpriced()

    march.refresh_from_db()
    july.refresh_from_db()
    execution.refresh_from_db()
    assert march.cost_usd == Decimal("4")
    assert july.cost_usd == Decimal("3")
    assert execution.cost_usd == Decimal("7")
    assert execution.unpriced is False


def test_batches_cover_every_message(monkeypatch):
    monkeypatch.setattr(reprice, "BATCH_SIZE", 2)
    executions = [
        ExecutionFactory(requested_model=UNKNOWN, unpriced=True) for _ in range(2)
    ]
    for execution in executions:
        for _ in range(3):
            add_message(execution, UNKNOWN, output_tokens=100_000)
    add_price(UNKNOWN, datetime(2026, 11, 1, tzinfo=UTC))

    result = reprice_unpriced()

    assert result.messages_repriced == 6
    assert result.executions_updated == 2
    assert ApiMessage.objects.filter(cost_usd__isnull=True).count() == 0
    for execution in executions:
        execution.refresh_from_db()
        # 3 messages * 100000 output tokens * 10 / 1M
        assert execution.cost_usd == Decimal("3")
        assert execution.unpriced is False


def test_second_run_changes_nothing():
    unpriced_execution()
    add_price(UNKNOWN, datetime(2026, 11, 1, tzinfo=UTC))
    reprice_unpriced()

    result = reprice_unpriced()

    assert result.messages_repriced == 0
    assert result.executions_updated == 0


def test_migration_clears_difference_of_unpriced_executions():
    migration = importlib.import_module(
        "agents.migrations.0010_clear_unpriced_cost_difference"
    )
    unpriced = unpriced_execution(reported_cost_usd=Decimal("0.09"))
    Execution.objects.filter(pk=unpriced.pk).update(
        cost_difference_usd=Decimal("-0.016534")
    )
    priced = ExecutionFactory(
        reported_cost_usd=Decimal("0.02"), cost_difference_usd=Decimal("-0.002")
    )

    migration.clear_unpriced_differences(django_apps, None)

    unpriced.refresh_from_db()
    priced.refresh_from_db()
    assert unpriced.cost_difference_usd is None
    assert priced.cost_difference_usd == Decimal("-0.002")
