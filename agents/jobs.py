"""Queueing, claiming and sweeping executions that run in Celery workers.

An execution is created `queued` and its task is sent after the creating
transaction commits. A worker claims it by moving it to `running` under a
row lock on its customer, which serializes claims per customer so the
concurrency limit holds. A delivery that finds the execution running,
finished or over the limit does nothing: agent runs have side effects and
are never retried automatically. Whenever a run ends, and on every sweep,
the oldest waiting executions of a customer with a free slot are sent
again.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
from datetime import datetime, timedelta
from enum import Enum

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from agents.admission import execution_admit
from agents.models import ApiMessage, Execution, Workflow
from agents.services import execution_create, execution_refresh_totals
from agents.signals import execution_finished, execution_stalled
from customers.models import Customer

logger = logging.getLogger(__name__)


class Claim(Enum):
    CLAIMED = "claimed"
    WAIT = "wait"  # over the customer's concurrency limit; stays queued
    SKIP = "skip"  # running elsewhere, finished or gone
    REJECTED = "rejected"  # an admission check closed it; it never runs


def worker_name() -> str:
    return socket.gethostname()


def execution_enqueue(
    *,
    customer: Customer,
    workflow: Workflow,
    prompt: str,
    model: str | None = None,
    max_turns: int | None = None,
) -> Execution:
    """Create a queued execution and send its task once the transaction commits."""
    with transaction.atomic():
        execution = execution_create(
            customer=customer,
            workflow=workflow,
            prompt=prompt,
            model=model,
            max_turns=max_turns,
        )
        transaction.on_commit(lambda: _send(execution.pk))
    return execution


def _send(execution_id: int) -> None:
    from agents.tasks import run_execution

    run_execution.delay(execution_id)


def execution_claim(
    execution_id: int, *, worker: str
) -> tuple[Claim, Execution | None]:
    """Move a queued execution to `running` for `worker`, if the customer has a free slot."""
    execution = Execution.objects.filter(pk=execution_id).first()
    if execution is None:
        logger.warning("Execution %s: not found; nothing to run", execution_id)
        return Claim.SKIP, None
    if execution.status != Execution.Status.QUEUED:
        logger.info(
            "Execution %s: already %s; this delivery does nothing",
            execution_id,
            execution.status,
        )
        return Claim.SKIP, execution
    limit = settings.AGENTMARGIN_CUSTOMER_CONCURRENCY
    with transaction.atomic():
        # Lock order: customer, then execution. Every claim of this
        # customer waits here, so the count below cannot go stale.
        Customer.objects.select_for_update().filter(pk=execution.customer_id).first()
        execution = Execution.objects.select_for_update().get(pk=execution_id)
        if execution.status != Execution.Status.QUEUED:
            logger.info(
                "Execution %s: already %s; this delivery does nothing",
                execution_id,
                execution.status,
            )
            return Claim.SKIP, execution
        running = Execution.objects.filter(
            customer_id=execution.customer_id, status=Execution.Status.RUNNING
        ).count()
        if running >= limit:
            logger.info(
                "Execution %s: customer %s has %d of %d runs going; waiting",
                execution_id,
                execution.customer_id,
                running,
                limit,
            )
            return Claim.WAIT, execution
        # Under the customer's lock, so a budget reservation cannot race
        # another claim of the same customer.
        if execution_admit(execution) is not None:
            return Claim.REJECTED, execution
        now = timezone.now()
        execution.status = Execution.Status.RUNNING
        execution.started_at = now
        execution.heartbeat_at = now
        execution.worker = worker
        execution.save(update_fields=["status", "started_at", "heartbeat_at", "worker"])
    logger.info("Execution %s: claimed by %s", execution_id, worker)
    return Claim.CLAIMED, execution


def dispatch_queued(
    customer_id: int | None = None, *, min_age_seconds: float = 0
) -> int:
    """Send the task again for the oldest queued executions that have a free slot.

    With `customer_id`, only that customer's; otherwise every customer's.
    Returns how many were sent. A duplicate delivery is harmless.
    """
    limit = settings.AGENTMARGIN_CUSTOMER_CONCURRENCY
    queued = Execution.objects.filter(status=Execution.Status.QUEUED)
    if customer_id is not None:
        queued = queued.filter(customer_id=customer_id)
    if min_age_seconds:
        queued = queued.filter(
            created_at__lt=timezone.now() - timedelta(seconds=min_age_seconds)
        )
    customers = (
        Customer.objects.filter(pk__in=queued.values("customer_id"))
        .annotate(
            running=Count(
                "executions", filter=Q(executions__status=Execution.Status.RUNNING)
            )
        )
        .values_list("pk", "running")
    )
    sent = 0
    for pk, running in customers:
        free = limit - running
        if free <= 0:
            continue
        for execution_id in (
            queued.filter(customer_id=pk)
            .order_by("created_at", "pk")
            .values_list("pk", flat=True)[:free]
        ):
            _send(execution_id)
            sent += 1
    if sent:
        logger.info("Sent %d queued executions to the workers", sent)
    return sent


@dataclasses.dataclass
class SweepResult:
    interrupted: list[int] = dataclasses.field(default_factory=list)
    dispatched: int = 0


def sweep_executions(*, now: datetime | None = None) -> SweepResult:
    """Interrupt running executions whose heartbeat stopped; send waiting ones again.

    A stalled execution keeps everything recorded before its worker died.
    Responses that never received their final output count are marked
    estimated, and the `execution_stalled` signal raises a staff alert.
    """
    now = now or timezone.now()
    stale_before = now - timedelta(seconds=settings.AGENTMARGIN_STALE_AFTER_SECONDS)
    stalled = Execution.objects.filter(status=Execution.Status.RUNNING).filter(
        Q(heartbeat_at__lt=stale_before)
        | Q(heartbeat_at__isnull=True, started_at__lt=stale_before)
    )
    result = SweepResult()
    for execution_id in stalled.values_list("pk", flat=True):
        if _interrupt_stalled(execution_id, stale_before=stale_before, now=now):
            result.interrupted.append(execution_id)
    # Waiting executions whose task was lost (a broker restart, a failed
    # send) are sent again once they are older than one sweep interval.
    result.dispatched = dispatch_queued(min_age_seconds=60)
    return result


@transaction.atomic
def _interrupt_stalled(
    execution_id: int, *, stale_before: datetime, now: datetime
) -> bool:
    execution = Execution.objects.select_for_update().get(pk=execution_id)
    last_sign = execution.heartbeat_at or execution.started_at
    if execution.status != Execution.Status.RUNNING or (
        last_sign and last_sign >= stale_before
    ):
        return False
    unfinished = ApiMessage.objects.filter(execution=execution, output_final=False)
    unfinished.update(estimated=True)
    # The recorder wrote its running totals at most once a second, so the
    # committed rows are the authority.
    execution_refresh_totals(execution)
    execution.status = Execution.Status.INTERRUPTED
    execution.finished_at = now
    execution.error = (
        f"The worker {execution.worker or '(unknown)'} stopped sending heartbeats "
        f"(last at {last_sign:%Y-%m-%d %H:%M:%S} UTC); the run was marked interrupted "
        "with the usage recorded until then."
    )
    execution.save(update_fields=["status", "finished_at", "error"])
    logger.warning(
        "Execution %s: no heartbeat since %s from worker %s; marked interrupted",
        execution_id,
        last_sign,
        execution.worker,
    )
    customer_id = execution.customer_id
    transaction.on_commit(
        lambda: execution_stalled.send(
            sender=Execution, execution_id=execution_id, customer_id=customer_id
        )
    )
    transaction.on_commit(
        lambda: execution_finished.send(
            sender=Execution,
            execution_id=execution_id,
            status=Execution.Status.INTERRUPTED,
        )
    )
    return True
