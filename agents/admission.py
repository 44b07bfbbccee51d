"""Admission: the checks an execution must pass before it starts.

The agents app cannot import billing, which owns budgets. Billing
registers its checks here when it loads, and `execution_admit` runs every
registered check under a row lock on the execution's customer. That is
the lock `agents.jobs.execution_claim` takes, so the checks of one
customer's executions run one at a time and cannot jointly overshoot a
limit. An execution that a check rejects is closed with the check's status
and reason and never runs.

Billing also registers run limits: each returns the most the execution
may cost (the remaining customer budget, say), and the runner stops the
run once its recorded cost goes above the smallest of them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from agents.models import Execution
from agents.signals import execution_finished
from customers.models import Customer

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Rejection:
    """The reason an execution may not start, and the final status it gets instead."""

    reason: str
    status: str = Execution.Status.BUDGET_EXCEEDED


# A check returns None to admit the execution. It runs inside the
# admission transaction, so rows it writes (a reservation) commit with the
# execution's claim or not at all.
AdmissionCheck = Callable[[Execution], Rejection | None]
# A run limit returns the most the execution may cost in USD, or None for
# no limit.
RunLimit = Callable[[Execution], Decimal | None]

_checks: dict[str, AdmissionCheck] = {}
_run_limits: dict[str, RunLimit] = {}


def register_check(uid: str, check: AdmissionCheck) -> None:
    """Run `check` before every execution starts. A uid registered again is replaced."""
    _checks[uid] = check


def register_run_limit(uid: str, limit: RunLimit) -> None:
    """Apply `limit` to every run; registering a uid again replaces it."""
    _run_limits[uid] = limit


def execution_admit(execution: Execution) -> Rejection | None:
    """Run the admission checks of `execution` under its customer's row lock.

    Returns None when every check admits it. Otherwise closes the
    execution with the first rejection's status and reason, and returns
    that rejection. Call it inside a transaction that already holds the
    customer's lock (as `execution_claim` does) or outside any transaction.
    """
    with transaction.atomic():
        Customer.objects.select_for_update().filter(pk=execution.customer_id).first()
        for uid, check in _checks.items():
            rejection = check(execution)
            if rejection is not None:
                logger.info(
                    "Execution %s: rejected by %s: %s",
                    execution.pk,
                    uid,
                    rejection.reason,
                )
                execution_reject(execution, rejection)
                return rejection
    return None


def execution_reject(execution: Execution, rejection: Rejection) -> Execution:
    """Close a queued or just-claimed execution with the rejection's status and text."""
    execution.status = rejection.status
    execution.finished_at = timezone.now()
    execution.error = rejection.reason[:4000]
    Execution.objects.filter(pk=execution.pk).update(
        status=execution.status,
        finished_at=execution.finished_at,
        error=execution.error,
    )
    execution_id = execution.pk
    status = execution.status
    transaction.on_commit(
        lambda: execution_finished.send(
            sender=Execution, execution_id=execution_id, status=status
        )
    )
    return execution


def run_budget_limit(execution: Execution) -> Decimal | None:
    """Return the most `execution` may cost in USD, or None for no limit.

    That is the smallest of the workflow's per-run budget and every
    registered run limit.
    """
    limits = [execution.workflow.per_run_budget_usd]
    limits.extend(limit(execution) for limit in _run_limits.values())
    known = [value for value in limits if value is not None]
    return min(known) if known else None
