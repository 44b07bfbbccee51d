"""Reconciliation: Stripe's meter totals set against our own, per customer and period.

Our figure is the sum of the meter values of the counted executions
that finished in the compared range, less those set aside as exceptions
(Stripe never got those, by design). Stripe's is the sum of its meter
event summaries over the same range. A difference is stored for staff
and resolved by a later run that finds both equal.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import stripe
from django.utils import timezone

from agents.models import Execution
from billing import plans as plan_rules
from billing.alerts import alert_raise
from billing.models import (
    Alert,
    MeterEventDelivery,
    Plan,
    ReconciliationDifference,
    Subscription,
)
from billing.stripe.client import stripe_client
from billing.stripe.metering import floor_hour, metered_usage
from billing.stripe.retry import call_with_retries

logger = logging.getLogger(__name__)

# Stripe aggregates meter events asynchronously, so the newest events may be
# missing from its summaries for a while. The compared range stops this
# long before now.
SUMMARY_LAG = timedelta(hours=1)


@dataclasses.dataclass
class ReconcileResult:
    """Periods compared, differences found and differences resolved."""

    compared: int = 0
    differences: int = 0
    resolved: int = 0


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def reconcile_all(
    *, now: datetime | None = None, client: stripe.StripeClient | None = None
) -> ReconcileResult:
    """Compare the current and the previous period of every Stripe subscription."""
    now = now or timezone.now()
    client = client or stripe_client()
    result = ReconcileResult()
    subscriptions = (
        Subscription.objects.exclude(stripe_subscription_id="")
        .exclude(customer__stripe_customer_id="")
        .select_related("customer")
        .order_by("pk")
    )
    today = now.astimezone(UTC).date()
    for subscription in subscriptions:
        if subscription.started_on > today:
            continue
        current = plan_rules.period_containing(subscription.started_on, today)
        periods = [current]
        if current[0] > subscription.started_on:
            previous_day = current[0] - timedelta(days=1)
            periods.insert(
                0, plan_rules.period_containing(subscription.started_on, previous_day)
            )
        for period_start, period_end in periods:
            reconcile_period(
                subscription,
                period_start,
                period_end,
                now=now,
                client=client,
                result=result,
            )
    logger.info(
        "Stripe reconciliation: %s periods compared, %s differ, %s resolved",
        result.compared,
        result.differences,
        result.resolved,
    )
    return result


def expected_usage(
    subscription: Subscription, start: datetime, end: datetime
) -> dict[str, tuple[Plan, Decimal]]:
    """Return our meter totals by Stripe meter id for executions finished in the range."""
    totals: dict[str, tuple[Plan, Decimal]] = {}
    sums: dict[str, Decimal] = defaultdict(Decimal)
    executions = Execution.objects.filter(
        customer_id=subscription.customer_id,
        status=Execution.Status.SUCCEEDED,
        finished_at__gte=start,
        finished_at__lt=end,
    ).exclude(meter_event_delivery__status=MeterEventDelivery.Status.EXCEPTION)
    for execution in executions.iterator():
        usage = metered_usage(execution)
        if usage is None or usage.subscription.pk != subscription.pk:
            continue
        meter_id = usage.plan.stripe_meter_id
        sums[meter_id] += usage.value
        totals[meter_id] = (usage.plan, sums[meter_id])
    return totals


def stripe_usage(
    client: stripe.StripeClient,
    meter_id: str,
    customer_id: str,
    start: datetime,
    end: datetime,
) -> Decimal:
    """Return the sum of Stripe's meter event summaries of a customer over the range."""
    params = {
        "customer": customer_id,
        "start_time": int(start.timestamp()),
        "end_time": int(end.timestamp()),
    }
    summaries = call_with_retries(
        lambda: client.v1.billing.meters.event_summaries.list(meter_id, params),
        description=f"Meter {meter_id}: event summaries of {customer_id}",
    )
    total = Decimal(0)
    for summary in summaries.auto_paging_iter():
        total += Decimal(str(summary.aggregated_value))
    return total


def reconcile_period(
    subscription: Subscription,
    period_start: date,
    period_end: date,
    *,
    now: datetime,
    client: stripe.StripeClient,
    result: ReconcileResult | None = None,
) -> list[ReconciliationDifference]:
    """Compare one period of a subscription, storing or resolving its differences."""
    result = result if result is not None else ReconcileResult()
    start = _midnight(period_start)
    end = min(_midnight(period_end), floor_hour(now - SUMMARY_LAG))
    if end <= start:
        return []

    expected = expected_usage(subscription, start, end)
    plan = plan_rules.plan_on(subscription, period_start)
    if plan.stripe_meter_id and plan.stripe_meter_id not in expected:
        expected[plan.stripe_meter_id] = (plan, Decimal(0))

    customer = subscription.customer
    differences = []
    for meter_id, (meter_plan, ours) in expected.items():
        theirs = stripe_usage(client, meter_id, customer.stripe_customer_id, start, end)
        result.compared += 1
        key = {
            "customer": customer,
            "stripe_meter_id": meter_id,
            "period_start": period_start,
        }
        if theirs == ours:
            result.resolved += ReconciliationDifference.objects.filter(
                resolved_at__isnull=True, **key
            ).update(
                resolved_at=now,
                checked_at=now,
                stripe_value=theirs,
                expected=ours,
                difference=0,
            )
            continue

        difference, _ = ReconciliationDifference.objects.update_or_create(
            **key,
            defaults={
                "plan": meter_plan,
                "period_end": period_end,
                "checked_until": end,
                "expected": ours,
                "stripe_value": theirs,
                "difference": theirs - ours,
                "checked_at": now,
                "resolved_at": None,
            },
        )
        differences.append(difference)
        result.differences += 1
        _report(difference, end)
    return differences


def _report(difference: ReconciliationDifference, end: datetime) -> None:
    customer = difference.customer
    logger.warning(
        "Customer %s: Stripe meter %s has %s from %s to %s, we counted %s",
        customer.slug,
        difference.stripe_meter_id,
        difference.stripe_value,
        difference.period_start,
        end,
        difference.expected,
    )
    alert_raise(
        kind=Alert.Kind.STRIPE_RECONCILIATION,
        dedupe_key=(
            f"stripe_reconciliation:{customer.pk}:{difference.stripe_meter_id}:"
            f"{difference.period_start}"
        ),
        message=(
            f"Stripe's usage of {customer.slug} on meter {difference.stripe_meter_id} "
            f"from {difference.period_start} differs from ours: Stripe "
            f"{difference.stripe_value}, ours {difference.expected}. See the "
            "reconciliation differences."
        ),
        customer_id=customer.pk,
    )
