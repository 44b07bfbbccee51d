"""Daily and monthly usage rollups per customer, workflow and model.

A run recomputes whole UTC days from the raw rows: token and cost figures
from agents.ApiMessage by the day of `arrived_at` and the model that
produced the message, execution counts from agents.Execution by the day of
`created_at` and the requested model. It then recomputes the months of
those days from the daily rows, in the same transaction as the days, so a
month always equals the sum of its days. Recomputing whole buckets makes a
run idempotent: running twice, late or out of order gives the same rows.

An incremental run finds the days to recompute from the rows changed since
the last run started, less OVERLAP. Only rows whose figures differ are
written, so a run with nothing new writes nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.db import DatabaseError, connection, models, transaction
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from agents.models import TOKEN_COUNT_FIELDS, ApiMessage, Execution
from billing.models import DailyUsage, MonthlyUsage, RollupCheckpoint

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "usage"

# Each run rescans the changes made since the previous run started, less
# this margin. The margin covers a row stamped before that start but
# committed after the previous run read the changes, and worker clocks
# that run behind the clock of the process running the rollup.
OVERLAP = timedelta(minutes=10)

# Key of the PostgreSQL advisory lock held for the length of a run. Any
# signed 64-bit number works, as long as no other advisory lock in this
# project uses it.
LOCK_KEY = 7_091_890_296_082_206_572

BATCH_SIZE = 500

MESSAGE_FIELDS = ("cost_usd", "unpriced_messages", "api_messages", *TOKEN_COUNT_FIELDS)
EXECUTION_FIELDS = (
    "executions",
    "succeeded",
    "failed",
    "interrupted",
    "max_turns_reached",
    "budget_exceeded",
)
USAGE_FIELDS = (*MESSAGE_FIELDS, *EXECUTION_FIELDS)

# Aggregates are aliased with this prefix because an annotation may not
# share its name with a model field, such as ApiMessage.input_tokens.
ALIAS = "rollup_"

MESSAGE_AGGREGATES = {
    f"{ALIAS}cost_usd": Sum("cost_usd"),
    f"{ALIAS}unpriced_messages": Count("pk", filter=Q(cost_usd__isnull=True)),
    f"{ALIAS}api_messages": Count("pk"),
    **{f"{ALIAS}{name}": Sum(name) for name in TOKEN_COUNT_FIELDS},
}

EXECUTION_AGGREGATES = {
    f"{ALIAS}executions": Count("pk"),
    f"{ALIAS}succeeded": Count("pk", filter=Q(status=Execution.Status.SUCCEEDED)),
    f"{ALIAS}failed": Count("pk", filter=Q(status=Execution.Status.FAILED)),
    f"{ALIAS}interrupted": Count("pk", filter=Q(status=Execution.Status.INTERRUPTED)),
    f"{ALIAS}max_turns_reached": Count(
        "pk", filter=Q(status=Execution.Status.MAX_TURNS)
    ),
    f"{ALIAS}budget_exceeded": Count(
        "pk", filter=Q(status=Execution.Status.BUDGET_EXCEEDED)
    ),
}

DAILY_KEY = ("day", "customer_id", "workflow_id", "model")
MONTHLY_KEY = ("month", "customer_id", "workflow_id", "model")


class RollupMode(enum.StrEnum):
    INCREMENTAL = "incremental"
    FULL = "full"
    SINCE = "since"


@dataclasses.dataclass
class RowChanges:
    """Rollup rows a run created, updated, deleted or left as they were."""

    created: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0

    @property
    def written(self) -> int:
        return self.created + self.updated + self.deleted

    def add(self, other: RowChanges) -> None:
        self.created += other.created
        self.updated += other.updated
        self.deleted += other.deleted
        self.unchanged += other.unchanged


@dataclasses.dataclass
class MonthProgress:
    """One month recomputed: passed to the `progress` callback of a run."""

    month: date
    days: list[date]
    daily: RowChanges
    monthly: RowChanges
    months_done: int
    months_total: int


@dataclasses.dataclass
class RollupResult:
    """Outcome of one roll_up_usage run."""

    mode: RollupMode
    skipped: bool = False
    days: list[date] = dataclasses.field(default_factory=list)
    months: list[date] = dataclasses.field(default_factory=list)
    daily: RowChanges = dataclasses.field(default_factory=RowChanges)
    monthly: RowChanges = dataclasses.field(default_factory=RowChanges)
    high_water_mark: datetime | None = None

    def summary(self) -> dict:
        """Return the counts as plain values, for logs and task results."""
        return {
            "mode": str(self.mode),
            "skipped": self.skipped,
            "days": len(self.days),
            "months": len(self.months),
            "daily_rows_written": self.daily.written,
            "monthly_rows_written": self.monthly.written,
            "high_water_mark": (
                self.high_water_mark.isoformat() if self.high_water_mark else None
            ),
        }


def roll_up_usage(
    *,
    since: date | None = None,
    full: bool = False,
    wait: bool = False,
    progress: Callable[[MonthProgress], None] | None = None,
) -> RollupResult:
    """Recompute the DailyUsage and MonthlyUsage rows of days whose raw rows changed.

    By default only the days touched since the last run, and their months,
    are recomputed. The first run, and a run with `full`, recomputes every
    day that has raw rows or rollup rows. With `since`, every such day from
    that UTC date on is recomputed and the checkpoint is left alone, because
    changes to earlier days are not looked at.

    On PostgreSQL a run holds an advisory lock. When another run has it,
    this one returns a result with `skipped` set, or waits for it with
    `wait`. Other databases take no lock: there, two runs at once can fail
    with a locking error, and the next run repeats the work.
    """
    if full and since is not None:
        raise ValueError("Pass either full or since, not both.")
    with _run_lock(wait=wait) as acquired:
        if not acquired:
            logger.info("Usage rollup: skipped because another run has the lock")
            return RollupResult(mode=_requested_mode(since, full), skipped=True)
        return _roll_up(since=since, full=full, progress=progress)


def _requested_mode(since: date | None, full: bool) -> RollupMode:
    if since is not None:
        return RollupMode.SINCE
    if full:
        return RollupMode.FULL
    return RollupMode.INCREMENTAL


def _roll_up(
    *,
    since: date | None,
    full: bool,
    progress: Callable[[MonthProgress], None] | None,
) -> RollupResult:
    started = timezone.now()
    checkpoint, _ = RollupCheckpoint.objects.get_or_create(name=CHECKPOINT_NAME)
    if since is not None:
        mode = RollupMode.SINCE
        days = _days_with_rows(since=since)
    elif full or checkpoint.high_water_mark is None:
        mode = RollupMode.FULL
        days = _days_with_rows(since=None)
    else:
        mode = RollupMode.INCREMENTAL
        days = _changed_days(checkpoint.high_water_mark - OVERLAP)

    days_by_month: dict[date, list[date]] = {}
    for day in sorted(days):
        days_by_month.setdefault(month_start(day), []).append(day)
    if mode is not RollupMode.INCREMENTAL:
        # Months whose every day vanished still have monthly rows to delete.
        for month in _months_with_rows(since=since):
            days_by_month.setdefault(month, [])

    result = RollupResult(mode=mode, days=sorted(days), months=sorted(days_by_month))
    logger.info(
        "Usage rollup: %s run started, %d days in %d months to recompute",
        mode,
        len(result.days),
        len(result.months),
    )
    for number, month in enumerate(result.months, start=1):
        daily, monthly = _recompute_month(month, days_by_month[month])
        result.daily.add(daily)
        result.monthly.add(monthly)
        if progress is not None:
            progress(
                MonthProgress(
                    month=month,
                    days=days_by_month[month],
                    daily=daily,
                    monthly=monthly,
                    months_done=number,
                    months_total=len(result.months),
                )
            )

    if mode is RollupMode.SINCE:
        result.high_water_mark = checkpoint.high_water_mark
    else:
        result.high_water_mark = _advance_checkpoint(started)
    logger.info(
        "Usage rollup: %s run recomputed %d days and %d months, "
        "wrote %d daily and %d monthly rows",
        mode,
        len(result.days),
        len(result.months),
        result.daily.written,
        result.monthly.written,
    )
    return result


@contextlib.contextmanager
def _run_lock(*, wait: bool) -> Iterator[bool]:
    """Take the run's advisory lock on PostgreSQL and yield whether it was acquired."""
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY])
        acquired = cursor.fetchone()[0]
        if not acquired and wait:
            logger.info("Usage rollup: waiting for the run in progress to finish")
            cursor.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
            acquired = True
    try:
        yield acquired
    finally:
        if acquired:
            _release_run_lock()


def _release_run_lock() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
    except DatabaseError:
        # The lock belongs to the database session, which ends with the
        # broken connection and releases it.
        logger.warning("Usage rollup: could not release the lock", exc_info=True)


def _advance_checkpoint(started: datetime) -> datetime:
    """Move the checkpoint to `started`, never backwards, and return it."""
    RollupCheckpoint.objects.filter(name=CHECKPOINT_NAME).filter(
        Q(high_water_mark__isnull=True) | Q(high_water_mark__lt=started)
    ).update(high_water_mark=started, updated_at=timezone.now())
    return RollupCheckpoint.objects.get(name=CHECKPOINT_NAME).high_water_mark


# Finding the days to recompute ---------------------------------------------


def _changed_days(changed_since: datetime) -> set[date]:
    """Return the UTC days whose raw rows changed at or after `changed_since`.

    NOTE: a deleted execution or message leaves no timestamp behind, so
    its figures stay in the rollups until a full run or a run with `since`.
    """
    changed_executions = Execution.objects.filter(
        Q(created_at__gte=changed_since)
        | Q(started_at__gte=changed_since)
        | Q(finished_at__gte=changed_since)
        | Q(heartbeat_at__gte=changed_since)
    )
    changed_messages = ApiMessage.objects.filter(updated_at__gte=changed_since)
    # The messages of a changed execution are included whatever their
    # updated_at: an imported transcript stamps its messages with the time
    # the run happened, but its execution is created at import time.
    messages_of_changed_executions = ApiMessage.objects.filter(
        execution__in=changed_executions.values("pk")
    )
    return (
        _distinct_days(changed_messages, "arrived_at")
        | _distinct_days(messages_of_changed_executions, "arrived_at")
        | _distinct_days(changed_executions, "created_at")
    )


def _days_with_rows(*, since: date | None) -> set[date]:
    """Return the UTC days with raw rows or daily rows, from `since` if given."""
    messages = ApiMessage.objects.all()
    executions = Execution.objects.all()
    daily = DailyUsage.objects.all()
    if since is not None:
        messages = messages.filter(arrived_at__gte=day_start(since))
        executions = executions.filter(created_at__gte=day_start(since))
        daily = daily.filter(day__gte=since)
    return (
        _distinct_days(messages, "arrived_at")
        | _distinct_days(executions, "created_at")
        | set(daily.order_by().values_list("day", flat=True).distinct())
    )


def _months_with_rows(*, since: date | None) -> set[date]:
    monthly = MonthlyUsage.objects.all()
    if since is not None:
        monthly = monthly.filter(month__gte=month_start(since))
    return set(monthly.order_by().values_list("month", flat=True).distinct())


def _distinct_days(queryset: models.QuerySet, field: str) -> set[date]:
    # order_by() drops the model's default ordering, whose columns would
    # otherwise join the SELECT DISTINCT and repeat each day.
    days = (
        queryset.annotate(rollup_day=TruncDate(field, tzinfo=UTC))
        .order_by()
        .values_list("rollup_day", flat=True)
        .distinct()
    )
    return set(days)


# Recomputing ------------------------------------------------------------------


def _recompute_month(
    month: date, days: Iterable[date]
) -> tuple[RowChanges, RowChanges]:
    """Recompute `days` of `month` from raw rows, then the month from its days.

    Both happen in one transaction. Return the changes to the daily rows
    and to the monthly rows.
    """
    days = sorted(days)
    if any(month_start(day) != month for day in days):
        raise ValueError(f"Days {days} are not all in the month of {month}.")
    with transaction.atomic():
        daily = RowChanges()
        if days:
            daily = _sync_rows(
                DailyUsage,
                DAILY_KEY,
                existing=DailyUsage.objects.filter(day__in=days),
                figures=_daily_figures(days),
            )
        monthly = _sync_rows(
            MonthlyUsage,
            MONTHLY_KEY,
            existing=MonthlyUsage.objects.filter(month=month),
            figures=_monthly_figures(month),
        )
    return daily, monthly


def _daily_figures(days: list[date]) -> dict[tuple, dict]:
    """Return the usage figures of `days` from raw rows, by DAILY_KEY."""
    message_filter = Q()
    execution_filter = Q()
    for start, end in _day_ranges(days):
        message_filter |= Q(arrived_at__gte=start, arrived_at__lt=end)
        execution_filter |= Q(created_at__gte=start, created_at__lt=end)

    messages = (
        ApiMessage.objects.filter(message_filter)
        .annotate(rollup_day=TruncDate("arrived_at", tzinfo=UTC))
        .order_by()
        .values(
            "rollup_day", "execution__customer_id", "execution__workflow_id", "model"
        )
        .annotate(**MESSAGE_AGGREGATES)
    )
    executions = (
        Execution.objects.filter(execution_filter)
        .annotate(rollup_day=TruncDate("created_at", tzinfo=UTC))
        .order_by()
        .values("rollup_day", "customer_id", "workflow_id", "requested_model")
        .annotate(**EXECUTION_AGGREGATES)
    )

    figures: dict[tuple, dict] = {}
    for row in messages:
        key = (
            row["rollup_day"],
            row["execution__customer_id"],
            row["execution__workflow_id"],
            row["model"],
        )
        _add_figures(figures, key, row, MESSAGE_FIELDS)
    for row in executions:
        key = (
            row["rollup_day"],
            row["customer_id"],
            row["workflow_id"],
            row["requested_model"],
        )
        _add_figures(figures, key, row, EXECUTION_FIELDS)
    return figures


def _monthly_figures(month: date) -> dict[tuple, dict]:
    """Return the usage figures of `month` from its daily rows, by MONTHLY_KEY."""
    rows = (
        DailyUsage.objects.filter(day__gte=month, day__lt=next_month_start(month))
        .order_by()
        .values("customer_id", "workflow_id", "model")
        .annotate(**{f"{ALIAS}{name}": Sum(name) for name in USAGE_FIELDS})
    )
    figures: dict[tuple, dict] = {}
    for row in rows:
        key = (month, row["customer_id"], row["workflow_id"], row["model"])
        _add_figures(figures, key, row, USAGE_FIELDS)
    return figures


def _add_figures(
    figures: dict[tuple, dict], key: tuple, row: dict, names: Iterable[str]
) -> None:
    values = figures.setdefault(key, _zero_figures())
    for name in names:
        # A sum over rows that are all NULL, such as the cost of unpriced
        # messages alone, is NULL: the priced part is then zero.
        values[name] += row[f"{ALIAS}{name}"] or 0


def _zero_figures() -> dict:
    values = dict.fromkeys(USAGE_FIELDS, 0)
    values["cost_usd"] = Decimal(0)
    return values


def _sync_rows(
    model: type[models.Model],
    key_fields: tuple[str, ...],
    *,
    existing: models.QuerySet,
    figures: dict[tuple, dict],
) -> RowChanges:
    """Make the rows of `existing` equal `figures`, writing only differences."""
    changes = RowChanges()
    now = timezone.now()
    stale = {tuple(getattr(row, name) for name in key_fields): row for row in existing}
    to_create = []
    to_update = []
    for key, values in figures.items():
        row = stale.pop(key, None)
        if row is None:
            to_create.append(model(**dict(zip(key_fields, key, strict=True)), **values))
        elif all(getattr(row, name) == value for name, value in values.items()):
            changes.unchanged += 1
        else:
            for name, value in values.items():
                setattr(row, name, value)
            # bulk_update() does not apply auto_now.
            row.updated_at = now
            to_update.append(row)

    # What is left in `stale` lost all its raw rows.
    stale_pks = [row.pk for row in stale.values()]
    for offset in range(0, len(stale_pks), BATCH_SIZE):
        batch = stale_pks[offset : offset + BATCH_SIZE]
        changes.deleted += model.objects.filter(pk__in=batch).delete()[0]
    model.objects.bulk_update(to_update, [*USAGE_FIELDS, "updated_at"], BATCH_SIZE)
    model.objects.bulk_create(to_create, batch_size=BATCH_SIZE)
    changes.updated = len(to_update)
    changes.created = len(to_create)
    return changes


# Dates ------------------------------------------------------------------------


def day_start(day: date) -> datetime:
    """Return midnight UTC at the start of `day`."""
    return datetime.combine(day, time.min, tzinfo=UTC)


def month_start(day: date) -> date:
    return day.replace(day=1)


def next_month_start(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def _day_ranges(days: list[date]) -> list[tuple[datetime, datetime]]:
    """Return the UTC datetime ranges covering sorted `days`, consecutive days merged."""
    ranges: list[tuple[datetime, datetime]] = []
    for day in days:
        start, end = day_start(day), day_start(day + timedelta(days=1))
        if ranges and ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], end)
        else:
            ranges.append((start, end))
    return ranges
