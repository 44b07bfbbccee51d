from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from io import StringIO

import psycopg
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from agents.models import ApiMessage, Execution
from billing import rollups, tasks
from billing.models import DailyUsage, MonthlyUsage, RollupCheckpoint
from billing.rollups import RollupMode, roll_up_usage
from tests.billing.usage import (
    HAIKU,
    SONNET,
    UNKNOWN,
    add_message,
    age_raw_rows,
    assert_rollups_match_raw_rows,
    at,
    build_usage,
    daily_rows,
    make_execution,
    monthly_rows,
)
from tests.factories import CustomerFactory, WorkflowFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def customer():
    return CustomerFactory(slug="acme")


@pytest.fixture
def workflow():
    return WorkflowFactory(slug="review", model=SONNET)


def snapshot():
    """Every rollup row with its id and updated_at, to see that nothing moved."""
    return [
        (type(row).__name__, row.pk, row.updated_at, str(row))
        for model in (DailyUsage, MonthlyUsage)
        for row in model.objects.order_by("pk")
    ]


# Sums --------------------------------------------------------------------------


def test_rollups_equal_raw_sums():
    build_usage()
    result = roll_up_usage()
    assert result.mode == RollupMode.FULL
    assert len(result.months) == 5
    assert DailyUsage.objects.count() > 50
    assert_rollups_match_raw_rows()


def test_sums_hold_for_several_seeds():
    for seed in (1, 2, 3):
        ApiMessage.objects.all().delete()
        Execution.objects.all().delete()
        build_usage(seed=seed, executions=25)
        roll_up_usage(full=True)
        assert_rollups_match_raw_rows()


def test_executions_summed_over_models_are_distinct(customer, workflow):
    execution = make_execution(
        customer, workflow, at("2025-11-03T10:00:00"), requested_model=SONNET
    )
    # Two models produce messages, but the execution counts once, for the model it
    # requested.
    add_message(execution, SONNET, at("2025-11-03T10:01:00"), Decimal("0.01"))
    add_message(execution, HAIKU, at("2025-11-03T10:02:00"), Decimal("0.002"))
    roll_up_usage()
    rows = {row.model: row for row in DailyUsage.objects.all()}
    assert rows[SONNET].executions == 1
    assert rows[SONNET].succeeded == 1
    assert rows[HAIKU].executions == 0
    assert rows[HAIKU].api_messages == 1
    assert sum(row.executions for row in rows.values()) == 1


def test_only_finished_executions_count_by_status(customer, workflow):
    day = at("2025-11-03T10:00:00")
    for status in Execution.Status.values:
        make_execution(customer, workflow, day, status=status)
    roll_up_usage()
    row = DailyUsage.objects.get()
    assert row.executions == 7
    assert row.succeeded == 1
    assert row.failed == 1
    assert row.interrupted == 1
    assert row.max_turns_reached == 1
    assert row.budget_exceeded == 1


def test_unpriced_message_not_counted_as_zero_cost(customer, workflow):
    execution = make_execution(customer, workflow, at("2025-11-03T10:00:00"))
    add_message(
        execution, SONNET, at("2025-11-03T10:01:00"), Decimal("0.25"), input_tokens=10
    )
    add_message(execution, SONNET, at("2025-11-03T10:02:00"), None, input_tokens=20)
    add_message(execution, UNKNOWN, at("2025-11-04T10:02:00"), None, input_tokens=40)
    roll_up_usage()

    mixed = DailyUsage.objects.get(day=date(2025, 11, 3), model=SONNET)
    assert mixed.cost_usd == Decimal("0.25")
    assert mixed.api_messages == 2
    assert mixed.unpriced_messages == 1
    assert mixed.input_tokens == 30
    assert not mixed.cost_complete

    unpriced = DailyUsage.objects.get(day=date(2025, 11, 4), model=UNKNOWN)
    assert unpriced.cost_usd == Decimal(0)
    assert unpriced.unpriced_messages == 1
    assert not unpriced.cost_complete

    month = MonthlyUsage.objects.get(model=SONNET)
    assert month.unpriced_messages == 1
    assert month.cost_usd == Decimal("0.25")


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="SQLite stores decimals as floating point, raw rows included",
)
def test_cost_keeps_fourteen_decimal_places(customer, workflow):
    execution = make_execution(customer, workflow, at("2025-11-03T10:00:00"))
    add_message(execution, SONNET, at("2025-11-03T10:01:00"), Decimal("0.00000001"))
    add_message(
        execution, SONNET, at("2025-11-03T10:02:00"), Decimal("1234.00000000000007")
    )
    roll_up_usage()
    assert DailyUsage.objects.get().cost_usd == Decimal("1234.00000001000007")
    assert MonthlyUsage.objects.get().cost_usd == Decimal("1234.00000001000007")


def test_month_boundaries_are_utc(customer, workflow):
    execution = make_execution(customer, workflow, at("2025-10-31T23:59:59.999999"))
    add_message(execution, SONNET, at("2025-10-31T23:59:59.999999"), Decimal("1"))
    add_message(execution, SONNET, at("2025-11-01T00:00:00"), Decimal("2"))
    # 00:30 in Paris on November 1st is still October 31st in UTC.
    add_message(execution, SONNET, at("2025-11-01T00:30:00+01:00"), Decimal("4"))
    later = make_execution(customer, workflow, at("2025-12-31T23:00:00-02:00"))
    add_message(later, SONNET, at("2026-01-01T00:00:00"), Decimal("8"))
    roll_up_usage()

    days = {row.day: row for row in DailyUsage.objects.all()}
    assert days[date(2025, 10, 31)].cost_usd == Decimal("5")
    assert days[date(2025, 10, 31)].executions == 1
    assert days[date(2025, 11, 1)].cost_usd == Decimal("2")
    assert days[date(2025, 11, 1)].executions == 0
    assert days[date(2026, 1, 1)].cost_usd == Decimal("8")
    assert days[date(2026, 1, 1)].executions == 1
    months = {row.month: row for row in MonthlyUsage.objects.all()}
    assert months[date(2025, 10, 1)].cost_usd == Decimal("5")
    assert months[date(2025, 11, 1)].cost_usd == Decimal("2")
    assert months[date(2026, 1, 1)].cost_usd == Decimal("8")
    assert months[date(2026, 1, 1)].executions == 1
    assert_rollups_match_raw_rows()


# Idempotence and incremental runs --------------------------------------------------


def test_second_run_changes_nothing():
    build_usage()
    roll_up_usage()
    before = snapshot()
    for full in (False, True):
        result = roll_up_usage(full=full)
        assert result.daily.written == 0
        assert result.monthly.written == 0
        assert snapshot() == before
    assert_rollups_match_raw_rows()


def test_incremental_run_without_changes_recomputes_nothing():
    build_usage()
    roll_up_usage()
    age_raw_rows()
    result = roll_up_usage()
    assert result.mode == RollupMode.INCREMENTAL
    assert result.days == []
    assert result.months == []


def test_late_message_fixes_old_day_and_month():
    build_usage()
    roll_up_usage()
    age_raw_rows()
    execution = Execution.objects.order_by("created_at").first()
    # Arrives now, but belongs to a day already rolled up a month before.
    add_message(execution, HAIKU, at("2025-10-03T08:00:00"), Decimal("0.5"))

    result = roll_up_usage()
    assert result.mode == RollupMode.INCREMENTAL
    assert result.days == [date(2025, 10, 3)]
    assert result.months == [date(2025, 10, 1)]
    assert result.daily.created == 1
    assert result.monthly.created == 1
    assert_rollups_match_raw_rows()


def test_message_updated_after_checkpoint_is_rolled_up():
    build_usage()
    roll_up_usage()
    age_raw_rows()
    message = ApiMessage.objects.exclude(cost_usd=None).order_by("pk").first()
    message.output_tokens += 1000
    message.cost_usd += Decimal("0.015")
    message.save()

    result = roll_up_usage()
    day = message.arrived_at.astimezone(UTC).date()
    assert result.days == [day]
    assert result.months == [day.replace(day=1)]
    assert result.daily.updated == 1
    assert result.monthly.updated == 1
    assert_rollups_match_raw_rows()


def test_repriced_message_moves_out_of_unpriced(customer, workflow):
    execution = make_execution(customer, workflow, at("2025-11-03T10:00:00"))
    message = add_message(execution, UNKNOWN, at("2025-11-03T10:01:00"), None)
    roll_up_usage()
    age_raw_rows()
    message.refresh_from_db()
    message.cost_usd = Decimal("0.3")
    message.save()
    roll_up_usage()
    row = MonthlyUsage.objects.get(model=UNKNOWN)
    assert row.unpriced_messages == 0
    assert row.cost_usd == Decimal("0.3")
    assert row.cost_complete


def test_finished_execution_is_counted_again(customer, workflow):
    execution = make_execution(
        customer, workflow, at("2025-11-03T10:00:00"), status=Execution.Status.RUNNING
    )
    roll_up_usage()
    assert DailyUsage.objects.get().succeeded == 0
    age_raw_rows()

    # The execution's status changes when it finishes, now, days after it
    # was created.
    Execution.objects.filter(pk=execution.pk).update(
        status=Execution.Status.SUCCEEDED, finished_at=timezone.now()
    )
    result = roll_up_usage()
    assert result.days == [date(2025, 11, 3)]
    assert DailyUsage.objects.get().succeeded == 1
    assert MonthlyUsage.objects.get().succeeded == 1


def test_imported_execution_with_old_messages_is_found(customer, workflow):
    roll_up_usage()
    # An import creates the execution now but stamps its messages, even
    # their updated_at, with the time the run happened.
    execution = make_execution(customer, workflow, at("2025-11-03T10:00:00"))
    Execution.objects.filter(pk=execution.pk).update(created_at=timezone.now())
    add_message(execution, SONNET, at("2025-11-03T10:01:00"), Decimal("0.2"))
    ApiMessage.objects.update(updated_at=at("2025-11-03T10:05:00"))

    result = roll_up_usage()
    assert date(2025, 11, 3) in result.days
    assert DailyUsage.objects.get(day=date(2025, 11, 3)).cost_usd == Decimal("0.2")
    assert_rollups_match_raw_rows()


def test_out_of_order_arrivals_and_runs(customer, workflow):
    execution = make_execution(customer, workflow, at("2025-12-10T10:00:00"))
    add_message(execution, SONNET, at("2025-12-10T10:01:00"), Decimal("1"))
    roll_up_usage()

    # Messages recorded later, with earlier arrival times, in reverse order
    # and under sequence numbers that do not follow their times.
    older = make_execution(customer, workflow, at("2025-11-30T23:59:00"))
    for arrived in (
        "2025-12-01T00:00:01",
        "2025-11-30T23:59:59",
        "2025-11-15T00:00:00",
    ):
        add_message(older, SONNET, at(arrived), Decimal("0.1"), input_tokens=5)
    # A run from a date, then an incremental run, then a full one: any
    # order gives the same rows.
    roll_up_usage(since=date(2025, 12, 1))
    roll_up_usage()
    after_incremental = (daily_rows(), monthly_rows())
    assert_rollups_match_raw_rows()
    roll_up_usage(full=True)
    assert (daily_rows(), monthly_rows()) == after_incremental


def test_since_recomputes_only_later_days():
    build_usage()
    roll_up_usage()
    checkpoint = RollupCheckpoint.objects.get().high_water_mark
    DailyUsage.objects.update(cost_usd=Decimal("999"))

    result = roll_up_usage(since=date(2025, 12, 15))
    assert result.mode == RollupMode.SINCE
    assert min(result.days) >= date(2025, 12, 15)
    assert result.months[0] == date(2025, 12, 1)
    assert not DailyUsage.objects.filter(
        day__gte=date(2025, 12, 15), cost_usd=Decimal("999")
    ).exists()
    # Days before `since` keep what they had.
    assert DailyUsage.objects.filter(
        day__lt=date(2025, 12, 15), cost_usd=Decimal("999")
    ).exists()
    assert RollupCheckpoint.objects.get().high_water_mark == checkpoint


def test_full_run_repairs_rollups():
    build_usage()
    roll_up_usage()
    DailyUsage.objects.filter(pk__in=DailyUsage.objects.values("pk")[:5]).delete()
    DailyUsage.objects.filter(day=date(2025, 11, 20)).update(input_tokens=1)
    MonthlyUsage.objects.update(executions=0)
    MonthlyUsage.objects.create(
        month=date(2024, 1, 1),
        customer=Execution.objects.first().customer,
        workflow=Execution.objects.first().workflow,
        model=SONNET,
    )
    result = roll_up_usage(full=True)
    assert result.monthly.deleted == 1
    assert_rollups_match_raw_rows()


def test_deleted_execution_rows_vanish_on_full_run(customer, workflow):
    kept_execution = make_execution(customer, workflow, at("2025-11-03T10:00:00"))
    add_message(kept_execution, SONNET, at("2025-11-03T10:01:00"), Decimal("1"))
    deleted_execution = make_execution(customer, workflow, at("2025-11-04T10:00:00"))
    add_message(deleted_execution, HAIKU, at("2025-11-04T10:01:00"), Decimal("2"))
    roll_up_usage()
    deleted_execution.delete()

    result = roll_up_usage(full=True)
    assert result.daily.deleted == 2
    assert result.monthly.deleted == 1
    assert_rollups_match_raw_rows()


def test_checkpoint_never_moves_back(customer, workflow):
    later = timezone.now() + timedelta(hours=1)
    RollupCheckpoint.objects.create(name=rollups.CHECKPOINT_NAME, high_water_mark=later)
    result = roll_up_usage()
    assert result.high_water_mark == later
    assert RollupCheckpoint.objects.get().high_water_mark == later


def test_checkpoint_set_to_run_start():
    before = timezone.now()
    result = roll_up_usage()
    assert before <= result.high_water_mark <= timezone.now()


def test_full_and_since_together_rejected():
    with pytest.raises(ValueError, match="either full or since"):
        roll_up_usage(full=True, since=date(2025, 11, 1))


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="advisory locks are PostgreSQL only"
)
def test_run_skipped_while_another_holds_lock():
    build_usage(executions=5)
    settings = connection.settings_dict
    other = psycopg.connect(
        host=settings["HOST"] or None,
        port=settings["PORT"] or None,
        user=settings["USER"],
        password=settings["PASSWORD"] or None,
        dbname=settings["NAME"],
        autocommit=True,
    )
    try:
        other.execute("SELECT pg_advisory_lock(%s)", [rollups.LOCK_KEY])
        result = roll_up_usage()
        assert result.skipped
        assert DailyUsage.objects.count() == 0
        other.execute("SELECT pg_advisory_unlock(%s)", [rollups.LOCK_KEY])
    finally:
        other.close()
    assert not roll_up_usage().skipped
    assert_rollups_match_raw_rows()


# Command and task -----------------------------------------------------------


def run_command(*args):
    output = StringIO()
    call_command("roll_up_usage", *args, stdout=output)
    return output.getvalue()


def test_command_prints_what_it_did():
    build_usage()
    output = run_command()
    assert "Mode: full" in output
    assert "[1/5] 2025-10:" in output
    assert "[5/5] 2026-02:" in output
    assert f"Days recomputed: {DailyUsage.objects.dates('day', 'day').count()}" in (
        output
    )
    assert "Months recomputed: 5" in output
    assert f"Daily rows: {DailyUsage.objects.count()} created, 0 updated" in output
    assert_rollups_match_raw_rows()

    output = run_command()
    assert "Mode: incremental" in output
    assert "Daily rows: 0 created, 0 updated, 0 deleted" in output


def test_command_since_and_full():
    build_usage()
    run_command()
    output = run_command("--since", "2026-01-01")
    assert "Mode: since" in output
    assert "From 2026-01-01" in output
    output = run_command("--full")
    assert "Mode: full" in output
    assert "0 created, 0 updated, 0 deleted" in output


def test_command_rejects_invalid_date():
    with pytest.raises(CommandError, match="invalid date '2026-13-01'"):
        run_command("--since", "2026-13-01")


def test_command_rejects_full_with_since():
    with pytest.raises(CommandError, match="not allowed with argument"):
        run_command("--full", "--since", "2026-01-01")


def test_task_rolls_up_and_is_idempotent():
    build_usage()
    first = tasks.roll_up_usage()
    assert first["mode"] == "full"
    assert first["skipped"] is False
    assert first["daily_rows_written"] == DailyUsage.objects.count()
    assert_rollups_match_raw_rows()

    second = tasks.roll_up_usage()
    assert second["mode"] == "incremental"
    assert second["daily_rows_written"] == 0
    assert second["monthly_rows_written"] == 0
    assert datetime.fromisoformat(second["high_water_mark"]) >= datetime.fromisoformat(
        first["high_water_mark"]
    )
