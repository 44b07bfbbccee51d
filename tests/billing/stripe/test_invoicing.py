"""Period-end invoices that Stripe builds from what we synced and metered."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import Alert, PeriodStatement, StripeInvoice, StripeInvoiceItem
from billing.stripe import invoice_items, metering
from billing.stripe.client import stripe_client
from tests.billing.stripe.conftest import (
    finished_execution,
    make_plan,
    pending_deliveries,
)
from tests.billing.stripe.test_metering import subscribed

pytestmark = pytest.mark.django_db


@pytest.fixture
def webhooks_to_us(stripe_backend, client):
    """Deliver every event the fake sends to our webhook endpoint."""
    answers = []

    def post(body, signature):
        response = client.post(
            "/stripe/webhook/",
            data=body,
            content_type="application/json",
            HTTP_STRIPE_SIGNATURE=signature,
        )
        answers.append(response.status_code)

    stripe_backend.add_webhook_listener(post)
    return answers


def subscribed_yesterday(fake, plan):
    """Subscribe a customer whose Stripe period began a day ago, so recent usage counts."""
    now = timezone.now()
    fake.set_time(int((now - timedelta(days=1)).timestamp()))
    customer = subscribed(plan, start=now.date() - timedelta(days=1))
    fake.set_time(int(now.timestamp()))
    return customer


def meter_executions(customer, plan, count):
    finished = timezone.now() - timedelta(minutes=10)
    deliveries = pending_deliveries(customer, plan, count, at=finished)
    metering.stream_send(deliveries, client=stripe_client())


@pytest.mark.parametrize(("executions", "cents"), [(10, 4900), (100, 7400)])
def test_hybrid_period_invoice(stripe_backend, hybrid_plan, executions, cents):
    customer = subscribed_yesterday(stripe_backend, hybrid_plan)
    meter_executions(customer, hybrid_plan, executions)
    subscription = customer.subscriptions.get()

    invoice = stripe_backend.close_period(subscription.stripe_subscription_id)

    assert invoice["total"] == cents
    assert invoice["amount_due"] == cents


def test_period_invoice_is_mirrored(stripe_backend, hybrid_plan, webhooks_to_us):
    customer = subscribed_yesterday(stripe_backend, hybrid_plan)
    meter_executions(customer, hybrid_plan, 100)
    subscription = customer.subscriptions.get()

    invoice = stripe_backend.close_period(subscription.stripe_subscription_id)

    mirror = StripeInvoice.objects.get(stripe_id=invoice["id"])
    subscription.refresh_from_db()
    assert set(webhooks_to_us) == {200}
    assert mirror.status == "paid"
    assert mirror.total == 7400
    assert mirror.amount_paid == 7400
    assert mirror.customer == customer
    assert mirror.stripe_subscription_id == subscription.stripe_subscription_id
    assert subscription.stripe_status == "active"


def test_failed_payment_marks_customer_past_due(
    stripe_backend, hybrid_plan, webhooks_to_us
):
    customer = subscribed_yesterday(stripe_backend, hybrid_plan)
    subscription = customer.subscriptions.get()
    stripe_backend.fail_next_payment(customer.stripe_customer_id)

    invoice = stripe_backend.close_period(subscription.stripe_subscription_id)

    customer.refresh_from_db()
    subscription.refresh_from_db()
    mirror = StripeInvoice.objects.get(stripe_id=invoice["id"])
    assert customer.status == "past_due"
    assert subscription.stripe_status == "past_due"
    assert subscription.status == "past_due"
    assert mirror.status == "open"
    assert Alert.objects.filter(kind=Alert.Kind.STRIPE_PAYMENT_FAILED).count() == 1


def test_cost_plus_invoice_charges_markup_on_cents(stripe_backend, cost_plus_plan):
    customer = subscribed_yesterday(stripe_backend, cost_plus_plan)
    finished = timezone.now() - timedelta(minutes=10)
    for cost in ("0.15", "0.25"):
        execution = finished_execution(customer, at=finished, cost=cost)
        metering.execution_meter(execution.pk)
    subscription = customer.subscriptions.get()

    invoice = stripe_backend.close_period(subscription.stripe_subscription_id)

    # 40 cents of token cost times the 1.5 markup.
    assert invoice["total"] == 60


def test_success_fees_become_invoice_items(stripe_backend):
    plan = make_plan(
        "fixed-fee", "success_fee", success_fee_kind="fixed_fee", fee_per_success="3"
    )
    customer = subscribed_yesterday(stripe_backend, plan)
    subscription = customer.subscriptions.get()
    statement = PeriodStatement.objects.create(
        customer=customer,
        period_start=subscription.current_period_start,
        period_end=subscription.current_period_end,
        lines=[
            {
                "kind": "success_fee",
                "description": "Fee per successful outcome",
                "quantity": "3",
                "unit_amount": "3",
                "amount": "9.00",
            }
        ],
        revenue_total=Decimal("9.00"),
        cost_total=Decimal("1.20"),
        margin=Decimal("7.80"),
    )

    first = invoice_items.success_fees_invoice()
    second = invoice_items.success_fees_invoice()
    invoice = stripe_backend.close_period(subscription.stripe_subscription_id)

    item = StripeInvoiceItem.objects.get(statement=statement)
    stripe_items = list(stripe_backend.store["invoiceitem"].values())
    assert first == 1
    assert second == 0
    assert len(stripe_items) == 1
    assert stripe_items[0]["amount"] == 900
    assert item.stripe_invoice_item_id == stripe_items[0]["id"]
    assert invoice["total"] == 900
