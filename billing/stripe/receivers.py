"""Billing's Stripe reactions to facts the agents app announces."""

from __future__ import annotations

import logging

from billing.stripe.client import stripe_enabled

logger = logging.getLogger(__name__)


def on_execution_finished(sender, *, execution_id: int, status: str, **kwargs) -> None:
    """Queue the meter event task of a succeeded execution.

    The signal is sent after the execution's transaction committed, so
    the task reads the finished row. Other statuses are never billed.
    """
    if status != "succeeded" or not stripe_enabled():
        return
    from billing.tasks import stripe_meter_execution

    stripe_meter_execution.delay(execution_id)
