from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import Alert, ReconciliationDifference
from billing.stripe import metering, reconcile
from billing.stripe.metering import floor_hour
from tests.billing.stripe.conftest import finished_execution
from tests.billing.stripe.test_metering import subscribed

pytestmark = pytest.mark.django_db


@pytest.fixture
def customer_with_usage(stripe_backend, hybrid_plan):
    """A customer with three counted executions two hours ago, one never sent."""
    now = timezone.now()
    stripe_backend.set_time(int((now - timedelta(days=1)).timestamp()))
    customer = subscribed(hybrid_plan, start=now.date() - timedelta(days=1))
    stripe_backend.set_time(int(now.timestamp()))
    finished = floor_hour(now) - timedelta(hours=2)
    executions = [finished_execution(customer, at=finished) for _ in range(3)]
    for execution in executions[:2]:
        metering.execution_meter(execution.pk)
    return customer


def test_reconciliation_finds_missing_event(stripe_backend, customer_with_usage):
    result = reconcile.reconcile_all()

    difference = ReconciliationDifference.objects.get()
    assert result.differences == 1
    assert difference.customer == customer_with_usage
    assert difference.expected == Decimal(3)
    assert difference.stripe_value == Decimal(2)
    assert difference.difference == Decimal(-1)
    assert difference.resolved_at is None
    assert Alert.objects.filter(kind=Alert.Kind.STRIPE_RECONCILIATION).count() == 1


def test_reconciliation_resolves_once_delivered(stripe_backend, customer_with_usage):
    reconcile.reconcile_all()
    metering.metering_sweep()

    result = reconcile.reconcile_all()

    difference = ReconciliationDifference.objects.get()
    assert result.resolved == 1
    assert difference.resolved_at is not None
    assert difference.stripe_value == Decimal(3)


def test_reconciliation_skips_exceptions(stripe_backend, customer_with_usage):
    unsent = customer_with_usage.executions.filter(
        meter_event_delivery__isnull=True
    ).get()
    delivery = metering.delivery_prepare(unsent)
    # Staff bill an exception by hand, so Stripe is not expected to have it.
    delivery.status = delivery.Status.EXCEPTION
    delivery.save()

    result = reconcile.reconcile_all()

    assert result.compared == 1
    assert result.differences == 0
    assert ReconciliationDifference.objects.count() == 0
