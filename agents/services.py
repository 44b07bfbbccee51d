"""Writes of the agents app: creating executions."""

from __future__ import annotations

import logging
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, DecimalField, Q, Sum, Value
from django.db.models.functions import Coalesce

from agents.models import TOKEN_COUNT_FIELDS, ApiMessage, Execution, Workflow
from customers.models import Customer

logger = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 100_000


@transaction.atomic
def execution_create(
    *,
    customer: Customer,
    workflow: Workflow,
    prompt: str,
    model: str | None = None,
    max_turns: int | None = None,
    source: str = Execution.Source.LIVE,
) -> Execution:
    """Create a queued execution of `workflow` for `customer`.

    Raises ValidationError when the customer or workflow cannot run or the
    input is invalid.
    """
    if customer.status != Customer.Status.ACTIVE:
        raise ValidationError(
            f"Customer {customer.slug} is {customer.status}; only active customers can run agents.",
            code="customer_inactive",
        )
    if not workflow.is_active:
        raise ValidationError(
            f"Workflow {workflow.slug} is disabled.", code="workflow_inactive"
        )
    prompt = prompt.strip()
    if not prompt and source == Execution.Source.LIVE:
        raise ValidationError("The prompt is empty.", code="prompt_empty")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValidationError(
            f"The prompt has {len(prompt)} characters; the maximum is {MAX_PROMPT_CHARS}.",
            code="prompt_too_long",
        )
    if max_turns is not None and max_turns < 1:
        raise ValidationError(
            f"max_turns must be at least 1, not {max_turns}.", code="max_turns"
        )
    execution = Execution.objects.create(
        customer=customer,
        workflow=workflow,
        prompt=prompt,
        requested_model=(model or "").strip() or workflow.model,
        max_turns=max_turns,
        source=source,
    )
    logger.info(
        "Execution %s: created for customer %s, workflow %s",
        execution.pk,
        customer.slug,
        workflow.slug,
    )
    return execution


def execution_refresh_totals(execution: Execution) -> Execution:
    """Set the execution's token and cost totals to the sums over its stored messages."""
    sums = ApiMessage.objects.filter(execution=execution).aggregate(
        **{f"sum_{name}": Coalesce(Sum(name), 0) for name in TOKEN_COUNT_FIELDS},
        sum_cost=Coalesce(
            Sum("cost_usd"), Value(Decimal(0)), output_field=DecimalField()
        ),
        messages=Count("pk"),
        unpriced_messages=Count("pk", filter=Q(cost_usd__isnull=True)),
        estimated_messages=Count("pk", filter=Q(estimated=True)),
    )
    totals = {name: sums[f"sum_{name}"] for name in TOKEN_COUNT_FIELDS}
    totals.update(
        cost_usd=sums["sum_cost"],
        api_message_count=sums["messages"],
        unpriced=sums["unpriced_messages"] > 0,
        estimated=sums["estimated_messages"] > 0,
    )
    if execution.reported_cost_usd is not None:
        totals["cost_difference_usd"] = totals["cost_usd"] - execution.reported_cost_usd
    for name, value in totals.items():
        setattr(execution, name, value)
    Execution.objects.filter(pk=execution.pk).update(**totals)
    return execution
