"""Entry points of the Stripe tasks and commands: each a no-op when Stripe is off."""

from __future__ import annotations

import logging

from billing.stripe import invoice_items, metering, reconcile, sync
from billing.stripe.client import log_disabled, stripe_enabled

logger = logging.getLogger(__name__)


def meter_execution(execution_id: int) -> str:
    """Send the meter event of one finished execution; return its delivery status."""
    if not stripe_enabled():
        log_disabled(f"meter event of execution {execution_id}")
        return "disabled"
    delivery = metering.execution_meter(execution_id)
    return delivery.status if delivery is not None else "not_metered"


def metering_sweep() -> dict:
    """Send pending meter events of the complete hours since the checkpoint."""
    if not stripe_enabled():
        log_disabled("metering sweep")
        return {"disabled": True}
    result = metering.metering_sweep()
    return {
        "delivered": result.delivered,
        "exceptions": result.exceptions,
        "pending": result.pending,
        "checkpoint": result.checkpoint.isoformat() if result.checkpoint else None,
    }


def reconciliation() -> dict:
    """Compare Stripe's meter totals with ours for recent periods."""
    if not stripe_enabled():
        log_disabled("reconciliation")
        return {"disabled": True}
    result = reconcile.reconcile_all()
    return {
        "compared": result.compared,
        "differences": result.differences,
        "resolved": result.resolved,
    }


def success_fees() -> int:
    """Send the success fees of closed periods as invoice items; return how many."""
    if not stripe_enabled():
        log_disabled("success fee invoice items")
        return 0
    return invoice_items.success_fees_invoice()


def plans_sync() -> sync.SyncResult | None:
    """Mirror every plan in Stripe, or return None when Stripe is off."""
    if not stripe_enabled():
        log_disabled("plan sync")
        return None
    return sync.plans_sync()
