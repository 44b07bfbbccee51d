from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from agents.models import Execution
from billing.models import Alert, MeterEventDelivery, RollupCheckpoint
from billing.stripe import metering, sync
from billing.stripe.client import client_override, stripe_client
from billing.stripe.subscriptions import customer_subscribe
from billing.tasks import stripe_meter_execution
from tests.billing.stripe.conftest import (
    FailFor,
    finished_execution,
    new_customer,
    pending_deliveries,
)

pytestmark = pytest.mark.django_db

METER_EVENTS = "/v2/billing/meter_events"
Status = MeterEventDelivery.Status


def subscribed(plan, slug="acme", start=None):
    """Sync the plans, then subscribe a new customer to `plan` in Stripe.

    The subscription starts yesterday unless `start` is given, so that
    executions the tests finish an hour or two ago are covered just after
    midnight too.
    """
    if not plan.stripe_product_id:
        sync.plans_sync()
        plan.refresh_from_db()
    customer = new_customer(slug)
    start = start or timezone.now().date() - timedelta(days=1)
    customer_subscribe(customer=customer, plan=plan, start=start)
    customer.refresh_from_db()
    return customer


def meter_requests(fake) -> list:
    return [request for request in fake.requests if request.path == METER_EVENTS]


def test_task_run_twice_sends_one_event(stripe_backend, hybrid_plan):
    customer = subscribed(hybrid_plan)
    execution = finished_execution(customer, at=timezone.now() - timedelta(minutes=5))

    first = stripe_meter_execution(execution.pk)
    second = stripe_meter_execution(execution.pk)

    delivery = MeterEventDelivery.objects.get(execution=execution)
    assert first == second == Status.DELIVERED
    assert len(meter_requests(stripe_backend)) == 1
    assert len(stripe_backend.meter_events) == 1
    event = stripe_backend.meter_events[0]
    assert event["identifier"] == f"agentmargin-exec-{execution.pk}"
    assert event["payload"] == {
        "stripe_customer_id": customer.stripe_customer_id,
        "value": "1",
    }
    assert event["timestamp"] == int(execution.finished_at.timestamp())
    assert delivery.attempts == 1


def test_task_after_worker_killed_bills_once(stripe_backend, hybrid_plan):
    customer = subscribed(hybrid_plan)
    execution = finished_execution(customer, at=timezone.now() - timedelta(minutes=5))
    stripe_meter_execution(execution.pk)
    # The worker died after Stripe took the event and before our row was
    # updated, so the late-acknowledged task runs again on another worker.
    MeterEventDelivery.objects.filter(execution=execution).update(
        status=Status.PENDING, delivered_at=None
    )

    status = stripe_meter_execution(execution.pk)

    assert status == Status.DELIVERED
    assert len(stripe_backend.meter_events) == 1
    assert [request.status for request in meter_requests(stripe_backend)] == [200, 400]


def test_500_then_success(stripe_backend, hybrid_plan, sleeps):
    customer = subscribed(hybrid_plan)
    execution = finished_execution(customer, at=timezone.now() - timedelta(minutes=5))
    stripe_backend.inject(method="POST", path=METER_EVENTS, status=500, times=1)

    status = stripe_meter_execution(execution.pk)

    assert status == Status.DELIVERED
    assert [request.status for request in meter_requests(stripe_backend)] == [500, 200]
    assert len(stripe_backend.meter_events) == 1
    assert len(sleeps) == 1
    assert MeterEventDelivery.objects.get(execution=execution).attempts == 2


def test_429_storm_backs_off_and_delivers(stripe_backend, hybrid_plan, sleeps):
    customer = subscribed(hybrid_plan)
    execution = finished_execution(customer, at=timezone.now() - timedelta(minutes=5))
    stripe_backend.inject(method="POST", path=METER_EVENTS, status=429, times=4)

    status = stripe_meter_execution(execution.pk)

    assert status == Status.DELIVERED
    assert [request.status for request in meter_requests(stripe_backend)] == [
        429,
        429,
        429,
        429,
        200,
    ]
    assert len(stripe_backend.meter_events) == 1
    assert len(sleeps) == 4
    # Exponential backoff: each wait's jitter range lies above the previous one.
    assert sleeps == sorted(sleeps)
    assert sleeps[3] >= 2.0


def test_connection_errors_are_retried(stripe_backend, hybrid_plan, sleeps):
    customer = subscribed(hybrid_plan)
    execution = finished_execution(customer, at=timezone.now() - timedelta(minutes=5))
    stripe_backend.inject(
        method="POST", path=METER_EVENTS, connection_error=True, times=2
    )

    status = stripe_meter_execution(execution.pk)

    assert status == Status.DELIVERED
    assert len(stripe_backend.meter_events) == 1
    assert len(sleeps) == 2


def test_persistent_500_leaves_event_pending(stripe_backend, hybrid_plan, settings):
    settings.STRIPE_MAX_RETRIES = 2
    customer = subscribed(hybrid_plan)
    execution = finished_execution(customer, at=timezone.now() - timedelta(minutes=5))
    stripe_backend.inject(method="POST", path=METER_EVENTS, status=500, times=3)

    status = stripe_meter_execution(execution.pk)
    delivery = MeterEventDelivery.objects.get(execution=execution)

    assert status == Status.PENDING
    assert delivery.attempts == 3
    assert "APIError" in delivery.last_error
    assert stripe_backend.meter_events == []


def test_late_usage_becomes_exception(stripe_backend, hybrid_plan):
    today = timezone.now().date()
    customer = subscribed(hybrid_plan, start=today - timedelta(days=60))
    finished = timezone.now() - timedelta(days=40)
    execution = finished_execution(customer, at=finished)

    status = stripe_meter_execution(execution.pk)
    delivery = MeterEventDelivery.objects.get(execution=execution)
    alert = Alert.objects.get(kind=Alert.Kind.STRIPE_LATE_USAGE)

    assert status == Status.EXCEPTION
    assert delivery.timestamp == finished
    assert "35 days" in delivery.last_error
    assert meter_requests(stripe_backend) == []
    assert alert.execution_id == execution.pk
    assert alert.customer_id == customer.pk


def test_usage_inside_the_window_is_sent(stripe_backend, hybrid_plan):
    today = timezone.now().date()
    customer = subscribed(hybrid_plan, start=today - timedelta(days=60))
    execution = finished_execution(customer, at=timezone.now() - timedelta(days=34))

    assert stripe_meter_execution(execution.pk) == Status.DELIVERED
    assert len(stripe_backend.meter_events) == 1


def test_unbilled_executions_are_not_metered(stripe_backend, hybrid_plan):
    customer = subscribed(hybrid_plan)
    failed = finished_execution(
        customer,
        at=timezone.now() - timedelta(minutes=5),
        status=Execution.Status.FAILED,
    )
    other = new_customer("no-subscription")
    unsubscribed = finished_execution(other, at=timezone.now() - timedelta(minutes=5))

    assert stripe_meter_execution(failed.pk) == "not_metered"
    assert stripe_meter_execution(unsubscribed.pk) == "not_metered"
    assert MeterEventDelivery.objects.count() == 0


def test_without_stripe_metering_does_nothing(hybrid_plan):
    customer = new_customer("acme")
    execution = finished_execution(customer, at=timezone.now())

    assert stripe_meter_execution(execution.pk) == "disabled"
    assert MeterEventDelivery.objects.count() == 0


def test_cost_plus_events_are_valued_in_cents(stripe_backend, cost_plus_plan):
    customer = subscribed(cost_plus_plan)
    execution = finished_execution(
        customer, at=timezone.now() - timedelta(minutes=5), cost="0.4025"
    )

    stripe_meter_execution(execution.pk)

    assert stripe_backend.meter_events[0]["payload"]["value"] == "40.25"


def test_finished_signal_queues_the_task(stripe_backend, hybrid_plan, monkeypatch):
    from agents.signals import execution_finished

    sent = []
    monkeypatch.setattr(stripe_meter_execution, "delay", sent.append)
    customer = subscribed(hybrid_plan)
    execution = finished_execution(customer, at=timezone.now())

    execution_finished.send(
        sender=Execution, execution_id=execution.pk, status=Execution.Status.SUCCEEDED
    )
    execution_finished.send(
        sender=Execution, execution_id=execution.pk, status=Execution.Status.FAILED
    )

    assert sent == [execution.pk]


# The hourly sweep -------------------------------------------------------------


def test_retried_sweep_bills_each_customer_once(stripe_backend, cost_plus_plan, sleeps):
    yesterday = timezone.now().date() - timedelta(days=1)
    hour = datetime(yesterday.year, yesterday.month, yesterday.day, 10, tzinfo=UTC)
    now = hour + timedelta(minutes=90)
    stripe_backend.set_time(int(now.timestamp()))
    alpha = subscribed(cost_plus_plan, "alpha", start=yesterday - timedelta(days=1))
    beta = subscribed(cost_plus_plan, "beta", start=yesterday - timedelta(days=1))
    # Values are cents of token cost: 1,200 for alpha, 300 for beta.
    for minute in (5, 20, 35):
        finished_execution(alpha, at=hour + timedelta(minutes=minute), cost="4.00")
    finished_execution(beta, at=hour + timedelta(minutes=50), cost="3.00")

    failing = FailFor(stripe_backend.http_client(), beta.stripe_customer_id)
    with client_override(api_key=stripe_backend.api_key, http_client=failing):
        first = metering.metering_sweep(now=now)
    checkpoint = RollupCheckpoint.objects.get(name=metering.CHECKPOINT_NAME)
    assert first.delivered == 3
    assert first.pending == 1
    assert checkpoint.high_water_mark == hour
    # Alpha's events reached Stripe, but the run died before recording it.
    MeterEventDelivery.objects.filter(customer=alpha).update(
        status=Status.PENDING, delivered_at=None
    )
    sleeps.clear()
    requests_before = len(stripe_backend.requests)

    second = metering.metering_sweep(now=now, client=stripe_client())

    second_requests = stripe_backend.requests[requests_before:]
    checkpoint.refresh_from_db()
    meter = cost_plus_plan.stripe_meter_id
    start, end = int(hour.timestamp()), int((hour + timedelta(hours=1)).timestamp())
    assert second.delivered == 4
    assert checkpoint.high_water_mark == hour + timedelta(hours=1)
    assert (
        stripe_backend.meter_usage(meter, alpha.stripe_customer_id, start, end) == 1200
    )
    assert stripe_backend.meter_usage(meter, beta.stripe_customer_id, start, end) == 300
    # Stripe rejected each of alpha's duplicates once, and none was retried.
    assert [request.status for request in second_requests] == [400, 400, 400, 200]
    assert sleeps == []
    assert not MeterEventDelivery.objects.exclude(status=Status.DELIVERED).exists()


def test_sweep_meters_executions_whose_task_was_lost(stripe_backend, hybrid_plan):
    customer = subscribed(hybrid_plan)
    finished = timezone.now() - timedelta(hours=2)
    finished_execution(customer, at=finished)

    result = metering.metering_sweep()

    assert result.delivered == 1
    assert len(stripe_backend.meter_events) == 1


# The v2 meter event stream -------------------------------------------------------


def test_stream_batches_and_renews_expired_session(stripe_backend, hybrid_plan):
    customer = subscribed(hybrid_plan)
    finished = timezone.now() - timedelta(minutes=30)
    deliveries = pending_deliveries(customer, hybrid_plan, 250, at=finished)
    client = stripe_client()

    session = metering.stream_send(deliveries[:100], client=client)
    stripe_backend.advance(16 * 60)
    metering.stream_send(deliveries[100:], client=client, session=session)

    stream = [
        r for r in stripe_backend.requests if r.path == "/v2/billing/meter_event_stream"
    ]
    sessions = [
        r
        for r in stripe_backend.requests
        if r.path == "/v2/billing/meter_event_session"
    ]
    assert session.renewals == 2
    assert len(sessions) == 2
    assert [request.status for request in stream] == [200, 401, 200, 200]
    assert len(stripe_backend.meter_events) == 250
    assert MeterEventDelivery.objects.filter(status=Status.DELIVERED).count() == 250


def test_sweep_streams_many_events(stripe_backend, hybrid_plan, settings):
    settings.STRIPE_METER_STREAM_THRESHOLD = 3
    customer = subscribed(hybrid_plan)
    finished = timezone.now() - timedelta(hours=2)
    for _ in range(5):
        finished_execution(customer, at=finished)

    result = metering.metering_sweep()

    stream = [
        r for r in stripe_backend.requests if r.path == "/v2/billing/meter_event_stream"
    ]
    assert result.delivered == 5
    assert len(stream) == 1
    assert meter_requests(stripe_backend) == []
    assert len(stripe_backend.meter_events) == 5


@pytest.mark.stripe_live
def test_task_run_twice_live(stripe_backend, hybrid_plan):
    customer = subscribed(hybrid_plan)
    execution = finished_execution(customer, at=timezone.now() - timedelta(minutes=5))

    stripe_meter_execution(execution.pk)
    MeterEventDelivery.objects.filter(execution=execution).update(status=Status.PENDING)
    status = stripe_meter_execution(execution.pk)

    assert status == Status.DELIVERED
    assert Decimal(MeterEventDelivery.objects.get(execution=execution).value) == 1


def test_retries_over_real_sockets(stripe_backend, hybrid_plan, sleeps):
    from tests.fakestripe import FakeStripeServer

    customer = subscribed(hybrid_plan)
    execution = finished_execution(customer, at=timezone.now() - timedelta(minutes=5))
    stripe_backend.inject(method="POST", path=METER_EVENTS, status=503, times=1)
    stripe_backend.inject(
        method="POST", path=METER_EVENTS, connection_error=True, times=1
    )

    with FakeStripeServer(stripe_backend) as server:
        addresses = {"api": server.url, "meter_events": server.url}
        with client_override(api_key=stripe_backend.api_key, base_addresses=addresses):
            status = stripe_meter_execution(execution.pk)

    assert status == Status.DELIVERED
    assert len(stripe_backend.meter_events) == 1
    assert len(sleeps) == 2
