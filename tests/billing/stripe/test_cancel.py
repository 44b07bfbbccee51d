"""Cancelling a subscription here cancels it in Stripe and stops its metering."""

from datetime import timedelta

import pytest
from django.utils import timezone

from billing.models import MeterEventDelivery, Subscription
from billing.stripe.subscriptions import customer_unsubscribe
from billing.tasks import stripe_meter_execution
from tests.billing.stripe.conftest import finished_execution
from tests.billing.stripe.test_metering import meter_requests, subscribed

pytestmark = pytest.mark.django_db


def test_cancel_at_period_end_reaches_stripe(stripe_backend, hybrid_plan):
    customer = subscribed(hybrid_plan)
    subscription = Subscription.objects.get(customer=customer)

    customer_unsubscribe(subscription=subscription, at=timezone.now().date())

    remote = stripe_backend.store["subscription"][subscription.stripe_subscription_id]
    assert remote["cancel_at_period_end"] is True
    assert remote["status"] == "active"
    request = next(
        r
        for r in stripe_backend.requests
        if r.path == f"/v1/subscriptions/{subscription.stripe_subscription_id}"
        and r.method == "POST"
    )
    assert request.idempotency_key == (
        f"agentmargin-subscription-{subscription.pk}-cancel-at-period-end"
    )


def test_cancel_now_reaches_stripe_and_stops_metering(stripe_backend, hybrid_plan):
    start = timezone.now().date() - timedelta(days=3)
    customer = subscribed(hybrid_plan, start=start)
    subscription = Subscription.objects.get(customer=customer)
    before = finished_execution(customer, at=timezone.now() - timedelta(days=2))

    customer_unsubscribe(
        subscription=subscription,
        at=timezone.now().date() - timedelta(days=1),
        at_period_end=False,
    )
    after = finished_execution(customer, at=timezone.now() - timedelta(minutes=5))

    remote = stripe_backend.store["subscription"][subscription.stripe_subscription_id]
    assert remote["status"] == "canceled"
    subscription.refresh_from_db()
    assert subscription.stripe_status == "canceled"
    # Usage before the end is still metered; usage after it never is.
    assert stripe_meter_execution(before.pk) == MeterEventDelivery.Status.DELIVERED
    assert stripe_meter_execution(after.pk) == "not_metered"
    assert len(meter_requests(stripe_backend)) == 1


def subscribed_locally(plan):
    from billing.services import subscription_create
    from tests.billing.stripe.conftest import new_customer

    customer = new_customer("local")
    subscription_create(customer=customer, plan=plan, start=timezone.now().date())
    return customer


def test_cancel_without_stripe_keeps_ours(hybrid_plan, caplog):
    customer = subscribed_locally(hybrid_plan)
    subscription = customer_unsubscribe(
        subscription=Subscription.objects.get(customer=customer),
        at=timezone.now().date(),
        at_period_end=False,
    )
    assert subscription.status == Subscription.Status.CANCELED
    assert "Stripe is off" in caplog.text
