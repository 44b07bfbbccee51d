"""Billing's reactions to facts the agents app announces."""

from agents.models import Execution
from billing.alerts import alert_raise
from billing.models import Alert


def on_execution_stalled(sender, execution_id: int, customer_id: int, **kwargs) -> None:
    execution = Execution.objects.filter(pk=execution_id).only("error").first()
    detail = execution.error if execution else ""
    alert_raise(
        kind=Alert.Kind.STALLED_EXECUTION,
        dedupe_key=f"stalled_execution:{execution_id}",
        message=f"Execution {execution_id} stalled and was marked interrupted. {detail}".strip(),
        customer_id=customer_id,
        execution_id=execution_id,
    )
