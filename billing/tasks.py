"""Celery tasks of the billing app, each a thin shell over a service."""

from celery import shared_task
from django.conf import settings

from billing import budgets, delivery, revenue, rollups, services
from billing.alerting import periodic as periodic_alerts
from billing.stripe import jobs as stripe_jobs


@shared_task(name="billing.tasks.roll_up_usage")
def roll_up_usage() -> dict:
    """Recompute the usage rollups of the days changed since the last run.

    Safe to run twice or late. A run that finds another one in progress
    returns at once with `skipped` set, and the next run picks up its
    changes. Then stores each customer's current period revenue, so the
    customer margin list compares it with the cost just rolled up.
    """
    summary = rollups.roll_up_usage().summary()
    if not summary.get("skipped"):
        # Revenue beside the fresh cost, for the customer margin list.
        summary["period_revenue_rows"] = revenue.period_revenue_refresh()
    return summary


@shared_task(name="billing.tasks.close_periods")
def close_periods() -> int:
    """Write the statement of every ended period of the active subscriptions.

    Safe to run twice: a period that has a statement is skipped. Returns
    how many statements were written.
    """
    return services.statements_close_ended_periods()


@shared_task(name="billing.tasks.stripe_meter_execution", acks_late=True)
def stripe_meter_execution(execution_id: int) -> str:
    """Send the Stripe meter event of one finished execution.

    Safe to run twice, and after a worker died halfway: the event's
    identifier comes from the execution id, so Stripe keeps one.
    """
    return stripe_jobs.meter_execution(execution_id)


@shared_task(name="billing.tasks.stripe_metering_sweep")
def stripe_metering_sweep() -> dict:
    """Send the Stripe meter events still pending, hour by hour."""
    return stripe_jobs.metering_sweep()


@shared_task(name="billing.tasks.stripe_reconcile")
def stripe_reconcile() -> dict:
    """Compare Stripe's meter totals with ours and record the differences."""
    return stripe_jobs.reconciliation()


@shared_task(name="billing.tasks.stripe_success_fees")
def stripe_success_fees() -> int:
    """Send the success fees of closed periods to Stripe as invoice items."""
    return stripe_jobs.success_fees()


@shared_task(name="billing.tasks.evaluate_alert_rules")
def evaluate_alert_rules() -> dict:
    """Check every alert rule, release stale reservations and resend stuck deliveries.

    Safe to run twice: a rule fires once per customer and period, and a
    delivery already made is not made again.
    """
    result = periodic_alerts.alert_rules_evaluate()
    return {
        "customers": result.customers,
        "raised": result.raised,
        "reservations_released": budgets.reservations_release_finished(),
        "deliveries_queued": delivery.alerts_redeliver_pending(),
    }


@shared_task(
    name="billing.tasks.deliver_alert",
    bind=True,
    max_retries=settings.AGENTMARGIN_ALERT_DELIVERY_RETRIES,
)
def deliver_alert(self, alert_id: int, channel: str) -> str:
    """Deliver one alert on one channel ("email" or "webhook"), retrying on failure."""
    try:
        return delivery.alert_deliver(alert_id, channel)
    except delivery.DeliveryError as exc:
        if self.request.retries >= self.max_retries:
            delivery.alert_delivery_failed(alert_id, channel, exc)
            return "failed"
        raise self.retry(
            exc=exc, countdown=delivery.retry_delay(self.request.retries)
        ) from exc


@shared_task(name="billing.tasks.anthropic_reconcile")
def anthropic_reconcile() -> dict:
    """Compare the last full UTC days with Anthropic's usage and cost reports.

    Safe to run twice: a day's comparisons are replaced, and an alert is
    raised once per day, customer and model. Does nothing without
    ANTHROPIC_ADMIN_API_KEY.
    """
    from billing.anthropic.reconcile import anthropic_reconcile_recent

    return anthropic_reconcile_recent()
