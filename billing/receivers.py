"""Billing's reactions to facts the agents app announces."""

import logging

from django.db import transaction

from agents.models import Execution
from billing import budgets, delivery
from billing.alerting import executions as execution_rules
from billing.alerting import realtime
from billing.alerts import alert_raise
from billing.models import Alert

logger = logging.getLogger(__name__)


def on_api_message_recorded(
    sender, execution_id: int, customer_id: int, update, **kwargs
) -> None:
    # Runs on the recording path: a failure here must not stop the run.
    try:
        realtime.on_api_message_recorded(
            sender, execution_id=execution_id, customer_id=customer_id, update=update
        )
    except Exception:  # noqa: BLE001 - the periodic check covers the rules
        logger.exception("Execution %s: real-time alert check failed", execution_id)


def on_execution_finished_budget(sender, execution_id: int, status: str, **kwargs):
    """Release the finished execution's reservation and check its alert rules."""
    realtime.forget(execution_id)
    try:
        budgets.reservation_release(execution_id)
    except Exception:  # noqa: BLE001 - the periodic job releases it later
        logger.exception("Execution %s: budget reservation not released", execution_id)
    try:
        execution_rules.execution_rules_check(execution_id)
    except Exception:  # noqa: BLE001 - the periodic check covers the rules
        logger.exception("Execution %s: alert check at finish failed", execution_id)


def on_alert_saved(sender, instance: Alert, created: bool, **kwargs) -> None:
    """Queue the new alert's deliveries once the row is committed."""
    if created:
        alert_id = instance.pk
        transaction.on_commit(lambda: delivery.alert_deliveries_queue(alert_id))


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
    try:
        execution_rules.stalled_rules_check(customer_id)
    except Exception:  # noqa: BLE001 - the periodic check covers the rule
        logger.exception("Customer %s: stalled-executions check failed", customer_id)
