"""Writes of the agents app: creating and canceling executions."""

from __future__ import annotations

import logging
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, DecimalField, Q, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from agents.models import (
    TOKEN_COUNT_FIELDS,
    ApiMessage,
    Execution,
    Workflow,
    cost_difference,
)
from agents.signals import execution_finished
from customers.models import ApiKey, Customer

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
    metadata: dict | None = None,
    idempotency_key: str = "",
    api_key: ApiKey | None = None,
) -> Execution:
    """Create a queued execution of `workflow` for `customer`.

    `metadata`, `idempotency_key` and `api_key` come from an API request.

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
        metadata=metadata or {},
        idempotency_key=idempotency_key,
        api_key=api_key,
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
        totals["cost_difference_usd"] = cost_difference(
            totals["cost_usd"], execution.reported_cost_usd, unpriced=totals["unpriced"]
        )
    for name, value in totals.items():
        setattr(execution, name, value)
    Execution.objects.filter(pk=execution.pk).update(**totals)
    return execution


CANCELED_BEFORE_START = "Canceled by the customer before it started."


class ExecutionFinished(Exception):
    """Raised on a request to change an execution that has already finished."""


@transaction.atomic
def execution_cancel(*, execution: Execution) -> Execution:
    """Cancel `execution`: end a queued one now, ask the runner to stop a running one.

    A queued execution ends `interrupted` at once and never runs: a worker
    that claims it later finds it finished. A running one gets
    `cancel_requested_at`, which its heartbeat thread reads within
    AGENTMARGIN_CANCEL_POLL_SECONDS. The runner then interrupts the SDK
    client and ends the run `interrupted`, keeping everything recorded.
    Asking again changes nothing. Raises ExecutionFinished for an
    execution that has finished.
    """
    execution = Execution.objects.select_for_update().get(pk=execution.pk)
    if execution.is_finished:
        raise ExecutionFinished(
            f"Execution {execution.pk} has already finished ({execution.status}); "
            "there is nothing to cancel."
        )
    now = timezone.now()
    if execution.cancel_requested_at is None:
        execution.cancel_requested_at = now
    if execution.status != Execution.Status.QUEUED:
        execution.save(update_fields=["cancel_requested_at"])
        logger.info("Execution %s: cancel requested while running", execution.pk)
        return execution
    execution.status = Execution.Status.INTERRUPTED
    execution.finished_at = now
    execution.error = CANCELED_BEFORE_START
    execution.save(
        update_fields=["cancel_requested_at", "status", "finished_at", "error"]
    )
    logger.info("Execution %s: canceled before it started", execution.pk)
    execution_id = execution.pk
    transaction.on_commit(
        lambda: execution_finished.send(
            sender=Execution,
            execution_id=execution_id,
            status=Execution.Status.INTERRUPTED,
        )
    )
    return execution
