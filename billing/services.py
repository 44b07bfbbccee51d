"""Writes of the billing app: alerts, subscriptions, outcomes and statements."""

from __future__ import annotations

import logging
from datetime import date, timedelta
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from agents.models import Execution
from billing import plans
from billing.invoicing import invoice_preview
from billing.models import (
    Alert,
    PeriodStatement,
    Plan,
    Subscription,
    SubscriptionChange,
)
from billing.revenue import period_revenue_refresh
from customers.models import Customer

logger = logging.getLogger(__name__)


@transaction.atomic
def alert_acknowledge(*, alert: Alert, user: AbstractBaseUser) -> Alert:
    """Mark `alert` as acknowledged by `user`.

    An alert that is already acknowledged keeps its first acknowledgement.
    """
    alert = Alert.objects.select_for_update().get(pk=alert.pk)
    if alert.acknowledged_at is not None:
        return alert
    alert.acknowledged_at = timezone.now()
    alert.acknowledged_by = user
    alert.save(update_fields=["acknowledged_at", "acknowledged_by"])
    logger.info("Alert %s: acknowledged by %s", alert.dedupe_key, user)
    return alert


@transaction.atomic
def alert_resolve(*, alert: Alert, user: AbstractBaseUser) -> Alert:
    """Mark `alert` as resolved by `user`, and as acknowledged if it was not.

    An alert that is already resolved keeps its first resolution.
    """
    alert = Alert.objects.select_for_update().get(pk=alert.pk)
    if alert.resolved_at is not None:
        return alert
    now = timezone.now()
    alert.resolved_at = now
    alert.resolved_by = user
    fields = ["resolved_at", "resolved_by"]
    if alert.acknowledged_at is None:
        alert.acknowledged_at = now
        alert.acknowledged_by = user
        fields += ["acknowledged_at", "acknowledged_by"]
    alert.save(update_fields=fields)
    logger.info("Alert %s: resolved by %s", alert.dedupe_key, user)
    return alert


@transaction.atomic
def subscription_create(*, customer: Customer, plan: Plan, start: date) -> Subscription:
    """Create an active subscription to `plan` whose periods are anchored on `start`.

    Raises ValidationError when the plan is inactive or the customer
    already has a subscription that is not canceled.
    """
    if not plan.is_active:
        raise ValidationError(
            {"plan": f"Plan {plan.slug} is inactive; choose an active plan."}
        )
    open_subscriptions = (
        Subscription.objects.select_for_update()
        .filter(customer=customer)
        .exclude(status=Subscription.Status.CANCELED)
    )
    if open_subscriptions.exists():
        raise ValidationError(
            {
                "customer": f"Customer {customer.slug} already has a subscription; "
                "change its plan or cancel it first."
            }
        )
    period_start, period_end = plans.period_containing(start, start)
    subscription = Subscription.objects.create(
        customer=customer,
        plan=plan,
        started_on=start,
        current_period_start=period_start,
        current_period_end=period_end,
    )
    logger.info(
        "Subscription %s: %s started on %s on plan %s",
        subscription.pk,
        customer.slug,
        start,
        plan.slug,
    )
    period_revenue_refresh(customers=[customer])
    return subscription


@transaction.atomic
def subscription_cancel(
    *, subscription: Subscription, at: date, at_period_end: bool = True
) -> Subscription:
    """Cancel the subscription, at the end of the period containing `at` or on `at`.

    At the period end (the default, as customers expect), the subscription
    stays active and billed until then, and the period-close job marks it
    canceled once that period is closed. Canceled on `at`, it ends at
    once: that period's base charge stays whole, as Stripe leaves it
    without a proration credit, and usage from `at` on is not billed.
    Raises ValidationError for a subscription already canceled or a day
    before it started.
    """
    subscription = Subscription.objects.select_for_update().get(pk=subscription.pk)
    if subscription.status == Subscription.Status.CANCELED:
        raise ValidationError(
            {"subscription": f"Subscription {subscription.pk} is already canceled."}
        )
    if at < subscription.started_on:
        raise ValidationError(
            {
                "at": f"{at} is before the subscription started on "
                f"{subscription.started_on}."
            }
        )
    if at_period_end:
        subscription.cancel_at_period_end = True
        subscription.ended_on = plans.period_containing(subscription.started_on, at)[1]
    else:
        subscription.status = Subscription.Status.CANCELED
        subscription.ended_on = at
    subscription.save(update_fields=["status", "cancel_at_period_end", "ended_on"])
    logger.info(
        "Subscription %s: %s canceled, ends on %s",
        subscription.pk,
        subscription.customer.slug,
        subscription.ended_on,
    )
    period_revenue_refresh(customers=[subscription.customer])
    return subscription


@transaction.atomic
def subscription_change_plan(
    *, subscription: Subscription, plan: Plan, prorate: bool, at: date
) -> SubscriptionChange:
    """Change the subscription's plan on day `at`, now if prorated, else next period.

    Proration works like Stripe's, which credits the unused time of the
    old price and charges the remaining time of the new one, but counts
    whole days. Each amount is price * remaining days / days in the
    period, rounded to cents once. The remaining days run from `at` to
    the end of the period. A prorated change on the period's first day
    puts the whole period on the new plan, with no credit or charge. A
    change still waiting for the next period is replaced by this one.
    """
    subscription = Subscription.objects.select_for_update().get(pk=subscription.pk)
    if subscription.status == Subscription.Status.CANCELED:
        raise ValidationError(
            {"subscription": f"Subscription {subscription.pk} is canceled."}
        )
    if subscription.ended_on is not None and at >= subscription.ended_on:
        raise ValidationError(
            {
                "at": f"Subscription {subscription.pk} ends on "
                f"{subscription.ended_on}; it cannot change plan from {at}."
            }
        )
    if not plan.is_active:
        raise ValidationError(
            {"plan": f"Plan {plan.slug} is inactive; choose an active plan."}
        )
    if at < subscription.started_on:
        raise ValidationError(
            {
                "at": f"{at} is before the subscription started on {subscription.started_on}."
            }
        )
    # A later decision replaces a change still waiting for its period.
    superseded, _ = subscription.changes.filter(
        prorate=False, effective_on__gt=at
    ).delete()
    old_plan = plans.plan_on(subscription, at)
    if old_plan.pk == plan.pk:
        raise ValidationError(
            {"plan": f"The subscription is already on plan {plan.slug}."}
        )
    period_start, period_end = plans.period_containing(subscription.started_on, at)
    if prorate and at == period_start:
        # Nothing of the period has been used yet: the new plan simply
        # takes the whole period, with no credit or charge.
        prorate = False
        effective_on = period_start
    else:
        effective_on = at if prorate else period_end
    change = SubscriptionChange(
        subscription=subscription,
        from_plan=old_plan,
        to_plan=plan,
        prorate=prorate,
        effective_on=effective_on,
        period_start=period_start,
        period_end=period_end,
    )
    if prorate:
        period_days = Decimal((period_end - period_start).days)
        remaining = (period_end - at).days
        change.remaining_days = remaining
        old_price = old_plan.monthly_price or Decimal(0)
        new_price = plan.monthly_price or Decimal(0)
        change.proration_credit = plans.round_line(-old_price * remaining / period_days)
        change.proration_charge = plans.round_line(new_price * remaining / period_days)
    change.save()
    subscription.plan = plan
    subscription.save(update_fields=["plan"])
    logger.info(
        "Subscription %s: plan %s to %s from %s (prorated: %s, %s waiting "
        "change replaced)",
        subscription.pk,
        old_plan.slug,
        plan.slug,
        change.effective_on,
        prorate,
        superseded,
    )
    period_revenue_refresh(customers=[subscription.customer])
    return change


@transaction.atomic
def execution_record_outcome(*, execution: Execution, value_usd: Decimal) -> Execution:
    """Record the business value of a finished execution's outcome, for success fees.

    Raises ValidationError when the value is not a Decimal, is negative or
    has fractions of a cent, or when the execution has not finished.
    """
    if not isinstance(value_usd, Decimal) or not value_usd.is_finite():
        raise ValidationError(
            {"value_usd": f"Must be a finite Decimal, not {value_usd!r}."}
        )
    if value_usd < 0:
        raise ValidationError({"value_usd": f"Must be zero or more, not {value_usd}."})
    execution = Execution.objects.select_for_update().get(pk=execution.pk)
    if not execution.is_finished:
        raise ValidationError(
            {
                "execution": f"Execution {execution.pk} is {execution.status}; "
                "record an outcome once it has finished."
            }
        )
    # The field's own validators reject more than 2 decimal places or 12 digits.
    field = Execution._meta.get_field("outcome_value_usd")
    execution.outcome_value_usd = field.clean(value_usd, execution)
    execution.save(update_fields=["outcome_value_usd"])
    logger.info("Execution %s: outcome value %s USD", execution.pk, value_usd)
    period_revenue_refresh(customers=[execution.customer])
    return execution


def statement_close_period(
    *, customer: Customer, period_start: date, period_end: date
) -> PeriodStatement:
    """Write the customer's statement of a period from its invoice preview, once.

    A period that already has a statement returns it unchanged, so a
    second call, or two at once, write one statement. Raises ValueError for
    a period that has not ended yet.
    """
    today = timezone.now().date()
    if period_end > today:
        raise ValueError(
            f"The period {period_start} to {period_end} has not ended on {today}; "
            "close it on or after its end date."
        )
    existing = PeriodStatement.objects.filter(
        customer=customer, period_start=period_start, period_end=period_end
    ).first()
    if existing is not None:
        return existing
    preview = invoice_preview(
        customer=customer, period_start=period_start, period_end=period_end
    )
    margin = preview.total - preview.cost_usd
    margin_percent = None
    if preview.total:
        margin_percent = plans.round_line(margin * 100 / preview.total)
    statement, created = PeriodStatement.objects.get_or_create(
        customer=customer,
        period_start=period_start,
        period_end=period_end,
        defaults={
            "currency": preview.currency,
            "lines": [line.as_json() for line in preview.lines],
            "revenue_total": preview.total,
            "cost_total": preview.cost_usd,
            "margin": margin,
            "margin_percent": margin_percent,
        },
    )
    if created:
        logger.info(
            "Customer %s: closed period %s to %s, revenue %s, cost %s",
            customer.slug,
            period_start,
            period_end,
            preview.total,
            preview.cost_usd,
        )
    return statement


def statements_close_ended_periods(*, today: date | None = None) -> int:
    """Close every ended period of each billed subscription, returning how many were new.

    Billed subscriptions are the active and past-due ones, and the
    canceled ones whose last period has no statement yet. Starts after
    the subscription's latest statement, so a daily run only looks at
    recent periods, and a period closed before is skipped. Also moves
    each subscription's current period forward to `today`, and marks a
    subscription canceled at its period end once that end has come.
    """
    today = today or timezone.now().date()
    closed = 0
    last_period_open = ~Exists(
        PeriodStatement.objects.filter(
            customer=OuterRef("customer"), period_end__gte=OuterRef("ended_on")
        )
    )
    subscriptions = (
        Subscription.objects.filter(started_on__lte=today)
        .filter(
            Q(status__in=[Subscription.Status.ACTIVE, Subscription.Status.PAST_DUE])
            | (
                Q(ended_on__isnull=False, ended_on__gt=F("started_on"))
                & last_period_open
            )
        )
        .select_related("customer")
        .order_by("pk")
    )
    for subscription in subscriptions:
        until = today
        if subscription.ended_on is not None:
            last_day = subscription.ended_on - timedelta(days=1)
            if last_day >= subscription.started_on:
                _, final_end = plans.period_containing(
                    subscription.started_on, last_day
                )
                until = min(today, final_end)
        try:
            closed += _close_periods_of(subscription, until)
        except Exception:
            # One subscription's fault must not keep the others' periods open.
            logger.exception(
                "Subscription %s: closing its periods up to %s failed; the next "
                "run tries again",
                subscription.pk,
                until,
            )
            continue
        if subscription.ended_on is not None and today >= subscription.ended_on:
            if subscription.status != Subscription.Status.CANCELED:
                Subscription.objects.filter(pk=subscription.pk).update(
                    status=Subscription.Status.CANCELED
                )
                logger.info(
                    "Subscription %s: ended on %s",
                    subscription.pk,
                    subscription.ended_on,
                )
            continue
        current = plans.period_containing(subscription.started_on, today)
        if current != (
            subscription.current_period_start,
            subscription.current_period_end,
        ):
            Subscription.objects.filter(pk=subscription.pk).update(
                current_period_start=current[0], current_period_end=current[1]
            )
    return closed


def _close_periods_of(subscription: Subscription, until: date) -> int:
    """Close the subscription's periods that end by `until`; return how many were new."""
    closed = 0
    # Statements of this subscription only: a later subscription of the
    # same customer starts on or after this one's end.
    statements = PeriodStatement.objects.filter(
        customer=subscription.customer, period_start__gte=subscription.started_on
    )
    if subscription.ended_on is not None:
        statements = statements.filter(period_start__lt=subscription.ended_on)
    latest = statements.order_by("-period_end").first()
    start = latest.period_end if latest else subscription.started_on
    for period_start, period_end in plans.periods_between(
        subscription.started_on, start, until
    ):
        before = PeriodStatement.objects.filter(
            customer=subscription.customer,
            period_start=period_start,
            period_end=period_end,
        ).exists()
        statement_close_period(
            customer=subscription.customer,
            period_start=period_start,
            period_end=period_end,
        )
        closed += not before
    return closed
