"""Raw usage rows for rollup tests, and the rollups expected from them.

The expected figures come from a plain Python loop over the raw rows, so
they share no code with the SQL aggregation under test.
"""

import random
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.utils import timezone

from agents.models import ApiMessage, Execution
from billing.models import DailyUsage, MonthlyUsage
from tests.factories import CustomerFactory, ExecutionFactory, WorkflowFactory

SONNET = "claude-sonnet-4-6"
HAIKU = "claude-haiku-4-5"
OPUS = "claude-opus-4-6"
UNKNOWN = "claude-test-9"

TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "web_search_requests",
)
FIELDS = (
    "cost_usd",
    "unpriced_messages",
    "api_messages",
    *TOKEN_FIELDS,
    "executions",
    "succeeded",
    "failed",
    "interrupted",
    "max_turns_reached",
    "budget_exceeded",
)
STATUS_FIELDS = {
    Execution.Status.SUCCEEDED: "succeeded",
    Execution.Status.FAILED: "failed",
    Execution.Status.INTERRUPTED: "interrupted",
    Execution.Status.MAX_TURNS: "max_turns_reached",
    Execution.Status.BUDGET_EXCEEDED: "budget_exceeded",
}
STATUSES = [
    Execution.Status.QUEUED,
    Execution.Status.RUNNING,
    *STATUS_FIELDS,
]


def at(text: str) -> datetime:
    """Parse an ISO 8601 time, reading a time without an offset as UTC."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def make_execution(
    customer,
    workflow,
    created_at: datetime,
    *,
    status=Execution.Status.SUCCEEDED,
    requested_model: str | None = None,
) -> Execution:
    """Create an execution as if created at `created_at`, which auto_now_add ignores."""
    execution = ExecutionFactory(
        customer=customer,
        workflow=workflow,
        status=status,
        requested_model=requested_model or workflow.model,
    )
    finished = status in Execution.FINISHED_STATUSES
    times = {
        "created_at": created_at,
        "started_at": None if status == Execution.Status.QUEUED else created_at,
        "finished_at": created_at + timedelta(minutes=5) if finished else None,
    }
    Execution.objects.filter(pk=execution.pk).update(**times)
    execution.refresh_from_db()
    return execution


def add_message(
    execution: Execution,
    model: str,
    arrived_at: datetime,
    cost: Decimal | None = None,
    **tokens,
) -> ApiMessage:
    sequence = ApiMessage.objects.filter(execution=execution).count() + 1
    return ApiMessage.objects.create(
        execution=execution,
        message_id=f"msg_{execution.pk}_{sequence}",
        sequence=sequence,
        model=model,
        cost_usd=cost,
        arrived_at=arrived_at,
        **tokens,
    )


def age_raw_rows(age: timedelta = timedelta(hours=2)) -> None:
    """Stamp every message as last changed `age` ago.

    After this, an incremental run finds only the changes a test makes
    next. Executions need nothing: their timestamps are already in the
    past.
    """
    ApiMessage.objects.update(updated_at=timezone.now() - age)


def build_usage(seed: int = 7, executions: int = 60) -> None:
    """Create executions and messages over several months, customers, workflows and models.

    Times run from late October 2025 into early February 2026, across month and year
    boundaries. About one message in six has no price.
    """
    rng = random.Random(seed)
    customers = [CustomerFactory(slug=f"customer-{n}") for n in range(3)]
    workflows = [
        WorkflowFactory(slug="review", model=SONNET),
        WorkflowFactory(slug="triage", model=HAIKU),
        WorkflowFactory(slug="research", model=OPUS),
    ]
    first = at("2025-10-28T00:00:00")
    for _ in range(executions):
        workflow = rng.choice(workflows)
        created_at = first + timedelta(minutes=rng.randrange(0, 100 * 24 * 60))
        execution = make_execution(
            rng.choice(customers),
            workflow,
            created_at,
            status=rng.choice(STATUSES),
            requested_model=rng.choice([workflow.model, workflow.model, UNKNOWN]),
        )
        for _ in range(rng.randrange(0, 5)):
            # Messages can arrive on a later day or month than their
            # execution was created on.
            arrived_at = created_at + timedelta(minutes=rng.randrange(0, 48 * 60))
            priced = rng.random() > 1 / 6
            add_message(
                execution,
                rng.choice([workflow.model, HAIKU, UNKNOWN if not priced else OPUS]),
                arrived_at,
                cost=Decimal(rng.randrange(1, 10**9)).scaleb(-12) if priced else None,
                input_tokens=rng.randrange(0, 50_000),
                output_tokens=rng.randrange(0, 8_000),
                cache_write_5m_tokens=rng.randrange(0, 4_000),
                cache_write_1h_tokens=rng.randrange(0, 2_000),
                cache_read_tokens=rng.randrange(0, 90_000),
                web_search_requests=rng.randrange(0, 3),
            )


def zero_figures() -> dict:
    figures = dict.fromkeys(FIELDS, 0)
    figures["cost_usd"] = Decimal(0)
    return figures


def expected_rollups() -> tuple[dict, dict]:
    """Return the expected daily and monthly figures, by key, from raw rows."""
    daily = defaultdict(zero_figures)
    monthly = defaultdict(zero_figures)
    for message in ApiMessage.objects.select_related("execution"):
        day = message.arrived_at.astimezone(UTC).date()
        execution = message.execution
        for buckets, period in ((daily, day), (monthly, day.replace(day=1))):
            figures = buckets[
                (period, execution.customer_id, execution.workflow_id, message.model)
            ]
            figures["api_messages"] += 1
            if message.cost_usd is None:
                figures["unpriced_messages"] += 1
            else:
                figures["cost_usd"] += message.cost_usd
            for name in TOKEN_FIELDS:
                figures[name] += getattr(message, name)
    for execution in Execution.objects.all():
        day = execution.created_at.astimezone(UTC).date()
        for buckets, period in ((daily, day), (monthly, day.replace(day=1))):
            figures = buckets[
                (
                    period,
                    execution.customer_id,
                    execution.workflow_id,
                    execution.requested_model,
                )
            ]
            figures["executions"] += 1
            if execution.status in STATUS_FIELDS:
                figures[STATUS_FIELDS[execution.status]] += 1
    return dict(daily), dict(monthly)


def expected_period_usage(start: date, end: date, customer=None) -> dict:
    """Return the figures of the days in [start, end), summed, from raw rows."""
    total = zero_figures()
    daily, _ = expected_rollups()
    for (day, customer_id, _workflow_id, _model), figures in daily.items():
        if not start <= day < end:
            continue
        if customer is not None and customer_id != customer.pk:
            continue
        for name in FIELDS:
            total[name] += figures[name]
    return total


def daily_rows() -> dict:
    return {
        (row.day, row.customer_id, row.workflow_id, row.model): figures_of(row)
        for row in DailyUsage.objects.all()
    }


def monthly_rows() -> dict:
    return {
        (row.month, row.customer_id, row.workflow_id, row.model): figures_of(row)
        for row in MonthlyUsage.objects.all()
    }


def figures_of(row) -> dict:
    return {name: getattr(row, name) for name in FIELDS}


def assert_rollups_match_raw_rows() -> None:
    expected_daily, expected_monthly = expected_rollups()
    assert daily_rows() == expected_daily
    assert monthly_rows() == expected_monthly
