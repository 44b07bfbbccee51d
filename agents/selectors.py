"""Reads of the agents app."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.db.models import Min

from agents.models import ApiMessage, Execution, ModelPrice, Workflow
from customers.models import Customer


def customer_get(slug: str) -> Customer:
    return Customer.objects.get(slug=slug)


def workflow_get(slug: str) -> Workflow:
    return Workflow.objects.get(slug=slug)


def execution_models(execution: Execution) -> list[str]:
    """Return the models that produced responses in `execution`, in order of first use."""
    models = ApiMessage.objects.filter(execution=execution).order_by("sequence")
    return list(dict.fromkeys(models.values_list("model", flat=True)))


def decimal_text(value: Decimal | None) -> str | None:
    if value is None:
        return None
    return format(value.normalize(), "f") if value else "0"


def execution_summary(execution: Execution) -> dict:
    """Return the summary printed by run_agent, import_stream and show_execution.

    `cost_usd` is null while any token is unpriced: the known part is then
    `priced_cost_usd`, and never passes for the whole.
    """
    execution.refresh_from_db()
    return {
        "execution_id": execution.pk,
        "status": execution.status,
        "customer": execution.customer.slug,
        "workflow": execution.workflow.slug,
        "simulated": execution.simulated,
        "models": execution_models(execution),
        "api_messages": execution.api_message_count,
        "num_turns": execution.num_turns,
        "input_tokens": execution.input_tokens,
        "output_tokens": execution.output_tokens,
        "cache_write_5m_tokens": execution.cache_write_5m_tokens,
        "cache_write_1h_tokens": execution.cache_write_1h_tokens,
        "cache_read_tokens": execution.cache_read_tokens,
        "web_search_requests": execution.web_search_requests,
        "cost_usd": None if execution.unpriced else decimal_text(execution.cost_usd),
        "priced_cost_usd": decimal_text(execution.cost_usd),
        "reported_cost_usd": decimal_text(execution.reported_cost_usd),
        "cost_difference_usd": decimal_text(execution.cost_difference_usd),
        "unpriced": execution.unpriced,
        "estimated": execution.estimated,
        "error": execution.error,
    }


def prices_starting_late(models: list[str]) -> list[tuple[str, datetime, datetime]]:
    """Return (model, first price start, first unpriced arrival) for models priced too late.

    A ModelPrice row applies from its `valid_from`, so messages of its model
    that arrived earlier stay unpriced. Each of `models` with such rows and
    no price for its earliest unpriced message is listed once.
    """
    late = []
    for model in models:
        first_start = ModelPrice.objects.filter(model=model).aggregate(
            first=Min("valid_from")
        )["first"]
        first_unpriced = ApiMessage.objects.filter(
            model=model, cost_usd__isnull=True
        ).aggregate(first=Min("arrived_at"))["first"]
        if first_start and first_unpriced and first_start > first_unpriced:
            late.append((model, first_start, first_unpriced))
    return late
