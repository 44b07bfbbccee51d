"""Price stored API messages again: those that had no price, or a whole period's."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import transaction
from django.db.models import Exists, OuterRef, Sum
from django.utils import timezone

from agents.models import ApiMessage, Execution, cost_difference

from . import overrides
from .engine import price_usage
from .usage import TokenUsage

logger = logging.getLogger(__name__)

BATCH_SIZE = 500


@dataclass(frozen=True)
class RepriceResult:
    """Counts of one reprice_unpriced run."""

    messages_repriced: int
    messages_still_unpriced: int
    executions_updated: int
    unpriced_models: tuple[str, ...]
    # Executions still running, whose unpriced messages were left for later.
    executions_running: int = 0


def reprice_unpriced(*, model: str | None = None) -> RepriceResult:
    """Price every ApiMessage without a cost at the rates of its `arrived_at`.

    With `model`, only messages of that exact model id are repriced. Each
    execution is updated in its own transaction, with its row locked, and its
    `cost_usd`, `unpriced` and `cost_difference_usd` are recomputed from its
    messages.
    """
    # Rows saved by other processes in the last seconds must count too.
    overrides.clear_cache()
    repriced = 0
    still_unpriced = 0
    # An execution whose messages span two batches is updated twice but
    # counted once.
    updated_execution_ids: set[int] = set()
    unpriced_models: set[str] = set()
    last_pk = 0

    while True:
        batch = _unpriced_messages(model).filter(pk__gt=last_pk).order_by("pk")
        message_ids_by_execution: dict[int, list[int]] = {}
        for pk, execution_id in batch.values_list("pk", "execution_id")[:BATCH_SIZE]:
            message_ids_by_execution.setdefault(execution_id, []).append(pk)
            last_pk = pk
        if not message_ids_by_execution:
            break

        for execution_id in sorted(message_ids_by_execution):
            outcome = _reprice_execution(
                execution_id, message_ids_by_execution[execution_id]
            )
            repriced += outcome.repriced
            still_unpriced += len(outcome.unpriced_models)
            unpriced_models.update(outcome.unpriced_models)
            if outcome.repriced:
                updated_execution_ids.add(execution_id)

    result = RepriceResult(
        messages_repriced=repriced,
        messages_still_unpriced=still_unpriced,
        executions_updated=len(updated_execution_ids),
        unpriced_models=tuple(sorted(unpriced_models)),
        executions_running=_unpriced_messages(model, running=True)
        .values("execution_id")
        .distinct()
        .count(),
    )
    logger.info(
        "Reprice finished: %s messages repriced, %s still unpriced, "
        "%s executions updated, unpriced models %s",
        result.messages_repriced,
        result.messages_still_unpriced,
        result.executions_updated,
        list(result.unpriced_models),
    )
    return result


def _unpriced_messages(model: str | None, *, running: bool = False):
    # A running execution's recorder keeps its totals in memory and writes
    # them back with each message, which would undo a reprice, so those
    # executions wait until they finish.
    messages = ApiMessage.objects.filter(cost_usd__isnull=True)
    if running:
        messages = messages.filter(execution__status=Execution.Status.RUNNING)
    else:
        messages = messages.exclude(execution__status=Execution.Status.RUNNING)
    if model is not None:
        messages = messages.filter(model=model)
    return messages


@dataclass(frozen=True)
class _ExecutionOutcome:
    repriced: int
    # The model of each message that is still unpriced, one entry per message.
    unpriced_models: list[str]


@transaction.atomic
def _reprice_execution(execution_id: int, message_ids: list[int]) -> _ExecutionOutcome:
    execution = Execution.objects.select_for_update().filter(pk=execution_id).first()
    if execution is None:
        # The execution was deleted after the batch was read, with its messages.
        return _ExecutionOutcome(repriced=0, unpriced_models=[])
    # Read again under the lock, because another process may have priced some.
    messages = list(
        ApiMessage.objects.filter(
            pk__in=message_ids, execution=execution, cost_usd__isnull=True
        ).order_by("pk")
    )
    priced_messages = []
    unpriced_models = []
    now = timezone.now()
    for message in messages:
        quote = price_usage(message.model, _usage_of(message), message.arrived_at)
        if not quote.priced:
            unpriced_models.append(message.model)
            continue
        message.cost_usd = quote.cost_usd
        message.price_source = quote.source
        message.price_version = quote.version
        # bulk_update() does not apply auto_now, so set updated_at here.
        message.updated_at = now
        priced_messages.append(message)

    if priced_messages:
        ApiMessage.objects.bulk_update(
            priced_messages, ["cost_usd", "price_source", "price_version", "updated_at"]
        )
        _update_execution_cost(execution)
        logger.info(
            "Execution %s: repriced %s messages, cost now %s USD, unpriced %s",
            execution.pk,
            len(priced_messages),
            execution.cost_usd,
            execution.unpriced,
        )
    return _ExecutionOutcome(
        repriced=len(priced_messages), unpriced_models=unpriced_models
    )


def _usage_of(message: ApiMessage) -> TokenUsage:
    # The stored 5m/1h split is already resolved, so split_estimated stays
    # False. The message's own `estimated` flag is left as recorded.
    return TokenUsage(
        input_tokens=message.input_tokens,
        output_tokens=message.output_tokens,
        cache_write_5m_tokens=message.cache_write_5m_tokens,
        cache_write_1h_tokens=message.cache_write_1h_tokens,
        cache_read_tokens=message.cache_read_tokens,
        web_search_requests=message.web_search_requests,
        service_tier=message.service_tier,
        speed=message.speed,
        inference_geo=message.inference_geo,
    )


def _update_execution_cost(execution: Execution) -> None:
    """Recompute the execution's cost fields from its messages and save them."""
    totals = (
        Execution.objects.filter(pk=execution.pk)
        .annotate(
            priced_cost=Sum("api_messages__cost_usd"),
            has_unpriced=Exists(
                ApiMessage.objects.filter(
                    execution=OuterRef("pk"), cost_usd__isnull=True
                )
            ),
        )
        .values("priced_cost", "has_unpriced")
        .get()
    )
    execution.cost_usd = totals["priced_cost"] or Decimal(0)
    execution.unpriced = totals["has_unpriced"]
    execution.cost_difference_usd = cost_difference(
        execution.cost_usd, execution.reported_cost_usd, unpriced=execution.unpriced
    )
    execution.save(update_fields=["cost_usd", "unpriced", "cost_difference_usd"])


@dataclass(frozen=True)
class PeriodRepriceResult:
    """Counts of one reprice_period run."""

    messages_checked: int
    messages_changed: int
    executions_updated: int
    # Executions still running, whose messages were left alone.
    executions_running: int


def reprice_period(*, start: datetime, end: datetime) -> PeriodRepriceResult:
    """Price again every message that arrived in [start, end) with today's price table.

    Each message is priced at the rates valid at its `arrived_at`, so a
    ModelPrice row added or corrected since it was recorded applies. Changed
    messages get a new `updated_at`, which makes the usage rollup recompute
    their day. Messages of running executions are left alone, because their
    recorder would write its own totals back.
    """
    overrides.clear_cache()
    in_period = ApiMessage.objects.filter(arrived_at__gte=start, arrived_at__lt=end)
    execution_ids = sorted(
        set(
            in_period.exclude(execution__status=Execution.Status.RUNNING)
            .values_list("execution_id", flat=True)
            .distinct()
        )
    )
    checked = changed = updated = 0
    for execution_id in execution_ids:
        outcome = _reprice_execution_period(execution_id, start, end)
        checked += outcome[0]
        changed += outcome[1]
        updated += 1 if outcome[1] else 0
    running = in_period.filter(execution__status=Execution.Status.RUNNING)
    result = PeriodRepriceResult(
        messages_checked=checked,
        messages_changed=changed,
        executions_updated=updated,
        executions_running=running.values("execution_id").distinct().count(),
    )
    logger.info(
        "Repriced messages from %s to %s: %s checked, %s changed, %s executions "
        "updated, %s running left alone",
        start.isoformat(),
        end.isoformat(),
        result.messages_checked,
        result.messages_changed,
        result.executions_updated,
        result.executions_running,
    )
    return result


@transaction.atomic
def _reprice_execution_period(
    execution_id: int, start: datetime, end: datetime
) -> tuple[int, int]:
    """Reprice one execution's messages of the period; return (checked, changed)."""
    execution = Execution.objects.select_for_update().filter(pk=execution_id).first()
    if execution is None or execution.status == Execution.Status.RUNNING:
        return 0, 0
    messages = list(
        ApiMessage.objects.filter(
            execution=execution, arrived_at__gte=start, arrived_at__lt=end
        ).order_by("pk")
    )
    now = timezone.now()
    changed = []
    for message in messages:
        quote = price_usage(message.model, _usage_of(message), message.arrived_at)
        if (quote.cost_usd, quote.source, quote.version) == (
            message.cost_usd,
            message.price_source,
            message.price_version,
        ):
            continue
        message.cost_usd = quote.cost_usd
        message.price_source = quote.source
        message.price_version = quote.version
        message.updated_at = now
        changed.append(message)
    if changed:
        ApiMessage.objects.bulk_update(
            changed, ["cost_usd", "price_source", "price_version", "updated_at"]
        )
        _update_execution_cost(execution)
    return len(messages), len(changed)
