"""Celery tasks of the agents app; each is a thin shell over agents.jobs."""

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from agents import jobs
from agents.runner import run_execution as run_in_process

logger = logging.getLogger(__name__)


@shared_task(
    name="agents.tasks.run_execution",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.AGENTMARGIN_TASK_SOFT_TIME_LIMIT,
    time_limit=settings.AGENTMARGIN_TASK_HARD_TIME_LIMIT,
)
def run_execution(execution_id: int) -> str:
    """Run a queued execution, unless another delivery already took it."""
    claim, execution = jobs.execution_claim(execution_id, worker=jobs.worker_name())
    if claim is not jobs.Claim.CLAIMED:
        return claim.value
    try:
        run_in_process(execution, stop_exceptions=(SoftTimeLimitExceeded,))
    finally:
        jobs.dispatch_queued(execution.customer_id)
    return execution.status


@shared_task(name="agents.tasks.sweep_executions")
def sweep_executions() -> dict:
    result = jobs.sweep_executions()
    return {"interrupted": result.interrupted, "dispatched": result.dispatched}
