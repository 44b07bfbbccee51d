"""Starting an execution from an API request: idempotency, admission, queueing.

Submission runs under a row lock on the customer, the lock that
`agents.jobs.execution_claim` and `agents.admission` take first. So two
requests with the same idempotency key create one execution, and the
admission checks (a budget, say) of one customer's requests run one at a
time. An execution that admission rejects is closed with the rejection's
status and reason, and never queued. An admitted one is checked again
when a worker claims it. The budget check then admits it at once, because
its reservation is already held.
"""

from __future__ import annotations

import dataclasses
import logging

from django.db import transaction

from agents.admission import Rejection, execution_admit
from agents.models import Execution, Workflow
from agents.services import execution_create
from agents.tasks import run_execution
from customers.models import ApiKey, Customer

logger = logging.getLogger(__name__)


class IdempotencyKeyReused(Exception):
    """Raised when an idempotency key comes back with a different request."""


@dataclasses.dataclass(frozen=True)
class Submission:
    """The execution a request created, or found for its idempotency key.

    `rejection` is set when admission closed the execution instead of
    queueing it; `replayed` when the idempotency key had been used before.
    """

    execution: Execution
    rejection: Rejection | None = None
    replayed: bool = False


@transaction.atomic
def execution_submit(
    *,
    customer: Customer,
    workflow: Workflow,
    prompt: str,
    metadata: dict,
    idempotency_key: str = "",
    api_key: ApiKey | None = None,
) -> Submission:
    """Create an execution for an API request, admit it and queue it.

    With an idempotency key that the customer used before, returns that
    execution unchanged, or raises IdempotencyKeyReused when the workflow,
    prompt or metadata differ. Raises django's ValidationError for input
    that `execution_create` rejects.
    """
    customer = Customer.objects.select_for_update().get(pk=customer.pk)
    if idempotency_key:
        earlier = (
            Execution.objects.filter(customer=customer, idempotency_key=idempotency_key)
            .select_related("workflow")
            .first()
        )
        if earlier is not None:
            _check_same_request(earlier, workflow, prompt, metadata)
            return Submission(
                earlier, rejection=submission_rejection(earlier), replayed=True
            )
    execution = execution_create(
        customer=customer,
        workflow=workflow,
        prompt=prompt,
        metadata=metadata,
        idempotency_key=idempotency_key,
        api_key=api_key,
    )
    rejection = execution_admit(execution)
    if rejection is not None:
        return Submission(execution, rejection=rejection)
    execution_id = execution.pk
    transaction.on_commit(lambda: run_execution.delay(execution_id))
    return Submission(execution)


def submission_rejection(execution: Execution) -> Rejection | None:
    """Return the admission rejection that closed `execution` before it ran, if any."""
    if execution.started_at is None and execution.status == (
        Execution.Status.BUDGET_EXCEEDED
    ):
        return Rejection(reason=execution.error, status=execution.status)
    return None


def _check_same_request(
    execution: Execution, workflow: Workflow, prompt: str, metadata: dict
) -> None:
    if (
        execution.workflow_id != workflow.pk
        or execution.prompt != prompt.strip()
        or execution.metadata != metadata
    ):
        raise IdempotencyKeyReused(
            f"The idempotency key {execution.idempotency_key!r} was used for "
            f"execution {execution.pk} with a different workflow, prompt or "
            "metadata. Use a new key for a new request."
        )
