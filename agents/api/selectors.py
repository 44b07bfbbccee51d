"""Reads of the executions endpoints, always within one customer."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Prefetch, QuerySet
from django.shortcuts import get_object_or_404

from agents.models import ApiMessage, Execution
from customers.models import Customer


def customer_executions(
    customer: Customer,
    *,
    status: str | None = None,
    workflow: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> QuerySet[Execution]:
    """Return the customer's executions, filtered; the caller orders and pages them."""
    executions = Execution.objects.filter(customer=customer).select_related("workflow")
    if status:
        executions = executions.filter(status=status)
    if workflow:
        executions = executions.filter(workflow__slug=workflow)
    if created_after:
        executions = executions.filter(created_at__gte=created_after)
    if created_before:
        executions = executions.filter(created_at__lt=created_before)
    return executions


def customer_execution(
    customer: Customer, execution_id: int, *, with_messages: bool = False
) -> Execution:
    """Return the customer's execution, or raise Http404.

    Another customer's execution raises Http404 too, so its existence is
    not revealed.
    """
    executions = Execution.objects.filter(customer=customer).select_related("workflow")
    if with_messages:
        executions = executions.prefetch_related(
            Prefetch("api_messages", queryset=ApiMessage.objects.order_by("sequence"))
        )
    return get_object_or_404(executions, pk=execution_id)
