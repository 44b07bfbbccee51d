"""Stripe customers and subscriptions for our customers and subscriptions.

Every create sends an idempotency key derived from our ids, so a retried
call, or two at once, create one Stripe object.
"""

from __future__ import annotations

import logging
from datetime import date

import stripe
from django.db import transaction

from billing import services
from billing.models import Plan, Subscription
from billing.stripe.client import log_disabled, stripe_client, stripe_enabled
from billing.stripe.retry import call_with_retries
from billing.stripe.sync import is_metered
from customers.models import Customer

logger = logging.getLogger(__name__)


class PlanNotSynced(Exception):
    """Raised when a plan has no Stripe price yet: run stripe_sync_plans first."""


def stripe_customer_ensure(customer: Customer, *, client: stripe.StripeClient) -> str:
    """Return the customer's Stripe id, creating the Stripe customer if needed."""
    if customer.stripe_customer_id:
        return customer.stripe_customer_id
    params = {
        "name": customer.name,
        "metadata": {
            "agentmargin_customer_id": str(customer.pk),
            "agentmargin_customer": customer.slug,
        },
    }
    created = call_with_retries(
        lambda: client.v1.customers.create(
            params, {"idempotency_key": f"agentmargin-customer-{customer.pk}"}
        ),
        description=f"Customer {customer.slug}: create Stripe customer",
    )
    Customer.objects.filter(pk=customer.pk).update(stripe_customer_id=created.id)
    customer.stripe_customer_id = created.id
    logger.info("Customer %s: Stripe customer %s", customer.slug, created.id)
    return created.id


def subscription_items(plan: Plan) -> list[dict]:
    """Return the Stripe subscription items of a plan: its monthly and usage prices."""
    items = []
    if plan.billing_model != Plan.BillingModel.USAGE:
        if not plan.stripe_price_id:
            raise PlanNotSynced(
                f"Plan {plan.slug} has no Stripe price; run stripe_sync_plans first."
            )
        items.append({"price": plan.stripe_price_id})
    if is_metered(plan):
        if not plan.stripe_metered_price_id:
            raise PlanNotSynced(
                f"Plan {plan.slug} has no Stripe usage price; run stripe_sync_plans "
                "first."
            )
        items.append({"price": plan.stripe_metered_price_id})
    return items


def stripe_subscription_create(
    subscription: Subscription, *, client: stripe.StripeClient | None = None
) -> Subscription:
    """Create the Stripe customer and subscription of one of our subscriptions.

    Does nothing when the subscription already has a Stripe id. Raises
    PlanNotSynced when the plan's prices are not in Stripe yet.
    """
    if subscription.stripe_subscription_id:
        return subscription
    client = client or stripe_client()
    customer_id = stripe_customer_ensure(subscription.customer, client=client)
    plan = subscription.plan
    params = {
        "customer": customer_id,
        "items": subscription_items(plan),
        "metadata": {
            "agentmargin_subscription_id": str(subscription.pk),
            "agentmargin_plan": plan.slug,
        },
    }
    key = f"agentmargin-subscription-{subscription.pk}-plan-{plan.pk}"
    created = call_with_retries(
        lambda: client.v1.subscriptions.create(params, {"idempotency_key": key}),
        description=f"Subscription {subscription.pk}: create Stripe subscription",
    )
    subscription.stripe_subscription_id = created.id
    subscription.stripe_status = created.status or ""
    Subscription.objects.filter(pk=subscription.pk).update(
        stripe_subscription_id=created.id, stripe_status=subscription.stripe_status
    )
    logger.info(
        "Subscription %s: Stripe subscription %s (%s)",
        subscription.pk,
        created.id,
        subscription.stripe_status,
    )
    return subscription


def customer_subscribe(*, customer: Customer, plan: Plan, start: date) -> Subscription:
    """Subscribe the customer to `plan` from `start`, here and then in Stripe.

    Our subscription is committed first. The Stripe calls follow outside
    the transaction, so a Stripe failure leaves a subscription without a
    Stripe id, which calling `stripe_subscription_create` again completes.
    """
    with transaction.atomic():
        subscription = services.subscription_create(
            customer=customer, plan=plan, start=start
        )
    if not stripe_enabled():
        log_disabled(f"Stripe subscription of subscription {subscription.pk}")
        return subscription
    return stripe_subscription_create(subscription)


def stripe_subscription_cancel(
    subscription: Subscription, *, client: stripe.StripeClient | None = None
) -> None:
    """Cancel the Stripe subscription of one of our canceled subscriptions.

    At the period end when ours ends then (Stripe keeps it active and
    stops at its period end), else at once, without a proration credit,
    as ours does. Does nothing for a subscription without a Stripe id.
    """
    if not subscription.stripe_subscription_id:
        return
    client = client or stripe_client()
    stripe_id = subscription.stripe_subscription_id
    if subscription.status != Subscription.Status.CANCELED:
        key = f"agentmargin-subscription-{subscription.pk}-cancel-at-period-end"
        remote = call_with_retries(
            lambda: client.v1.subscriptions.update(
                stripe_id, {"cancel_at_period_end": True}, {"idempotency_key": key}
            ),
            description=f"Subscription {subscription.pk}: cancel at period end",
        )
    else:
        key = f"agentmargin-subscription-{subscription.pk}-cancel"
        remote = call_with_retries(
            lambda: client.v1.subscriptions.cancel(
                stripe_id, options={"idempotency_key": key}
            ),
            description=f"Subscription {subscription.pk}: cancel now",
        )
    Subscription.objects.filter(pk=subscription.pk).update(
        stripe_status=remote.status or ""
    )
    logger.info(
        "Subscription %s: Stripe subscription %s canceled (%s, cancel at period "
        "end: %s)",
        subscription.pk,
        stripe_id,
        remote.status,
        remote.cancel_at_period_end,
    )


def customer_unsubscribe(
    *, subscription: Subscription, at: date, at_period_end: bool = True
) -> Subscription:
    """Cancel the subscription here (see `services.subscription_cancel`), then in Stripe.

    Ours is committed first; a Stripe failure is raised after it, and
    calling `stripe_subscription_cancel` again completes it.
    """
    with transaction.atomic():
        subscription = services.subscription_cancel(
            subscription=subscription, at=at, at_period_end=at_period_end
        )
    if not stripe_enabled():
        log_disabled(f"Stripe cancellation of subscription {subscription.pk}")
        return subscription
    stripe_subscription_cancel(subscription)
    return subscription
