"""Metered usage: one Stripe meter event per counted execution.

An execution counts when it succeeded and the plan in effect on the day
it finished bills through a meter: one unit per execution, or for
cost-plus plans our token cost in cents. Its event's `identifier` is
derived from the execution id and its `timestamp` is when it finished,
so it lands in the right period and a second send can never bill twice.

Two paths send events. A task sends each execution's event once it has
finished. The sweep walks hour windows from a checkpoint and sends what
is still pending, through the v2 meter event stream when there are many.
The checkpoint moves past a window only once every event in it is
delivered or set aside as an exception.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import stripe
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents.models import Execution
from billing import plans as plan_rules
from billing.alerts import alert_raise
from billing.models import (
    Alert,
    MeterEventDelivery,
    Plan,
    RollupCheckpoint,
    Subscription,
)
from billing.stripe.client import stripe_client
from billing.stripe.money import plain_decimal
from billing.stripe.retry import call_with_retries
from billing.stripe.sync import CUSTOMER_PAYLOAD_KEY, VALUE_PAYLOAD_KEY, is_metered

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "stripe_metering"
# Stripe takes meter events up to 35 days old. The margin covers the clock
# difference and the time a send spends retrying.
STRIPE_MAX_EVENT_AGE = timedelta(days=35)
LATE_MARGIN = timedelta(hours=1)
# The v2 meter event stream takes at most 100 events per request.
STREAM_BATCH_SIZE = 100
# Renew a stream session this long before its expiry time.
SESSION_RENEW_MARGIN = timedelta(seconds=60)
# The sweep raises an alert when its checkpoint lags this far behind.
CHECKPOINT_ALERT_LAG = timedelta(hours=24)
PREPARE_OVERLAP = timedelta(hours=1)
CENTS = Decimal(100)
Status = MeterEventDelivery.Status


@dataclasses.dataclass(frozen=True)
class MeteredUsage:
    """The meter value of one execution, with the plan and subscription it bills."""

    plan: Plan
    subscription: Subscription
    value: Decimal


@dataclasses.dataclass
class SweepResult:
    """Counts of one sweep's events (delivered, set aside, left pending) and its checkpoint."""

    delivered: int = 0
    exceptions: int = 0
    pending: int = 0
    checkpoint: datetime | None = None


def identifier_for(execution_id: int) -> str:
    """Return the meter event identifier of an execution; stable across retries."""
    return f"agentmargin-exec-{execution_id}"


def metered_usage(execution: Execution) -> MeteredUsage | None:
    """Return what the execution adds to its plan's meter, or None if it is not metered.

    Only succeeded executions count, of a customer whose Stripe
    subscription started on or before the day they finished and had not
    ended by the day they were created.

    NOTE: invoice previews place an execution in the period it was created
    in, Stripe in the period it finished in, so a run that crosses a period
    end is billed one period apart in the two.
    """
    if execution.status != Execution.Status.SUCCEEDED or execution.finished_at is None:
        return None
    day = execution.finished_at.astimezone(UTC).date()
    subscription = (
        Subscription.objects.filter(
            customer_id=execution.customer_id, started_on__lte=day
        )
        .exclude(stripe_subscription_id="")
        .order_by("-started_on", "-pk")
        .first()
    )
    if subscription is None:
        return None
    created_day = execution.created_at.astimezone(UTC).date()
    if subscription.ended_on is not None and created_day >= subscription.ended_on:
        # Invoices bill nothing created from the day a subscription ends.
        return None
    plan = plan_rules.plan_on(subscription, day)
    if not is_metered(plan) or not plan.stripe_meter_id:
        return None
    if plan.usage_pricing == Plan.UsagePricing.COST_PLUS:
        value = execution.cost_usd * CENTS
    else:
        value = Decimal(1)
    return MeteredUsage(plan=plan, subscription=subscription, value=value)


def delivery_prepare(execution: Execution) -> MeterEventDelivery | None:
    """Return the execution's delivery row, creating it if the execution is metered."""
    existing = MeterEventDelivery.objects.filter(execution=execution).first()
    if existing is not None:
        return existing
    usage = metered_usage(execution)
    if usage is None:
        return None
    customer = usage.subscription.customer
    if not customer.stripe_customer_id:
        logger.warning(
            "Execution %s: customer %s has no Stripe customer; usage not metered",
            execution.pk,
            customer.slug,
        )
        return None
    delivery, _ = MeterEventDelivery.objects.get_or_create(
        execution=execution,
        defaults={
            "customer_id": execution.customer_id,
            "plan": usage.plan,
            "identifier": identifier_for(execution.pk),
            "event_name": usage.plan.stripe_meter_event_name,
            "stripe_customer_id": customer.stripe_customer_id,
            "value": usage.value,
            "timestamp": execution.finished_at,
        },
    )
    return delivery


def execution_meter(
    execution_id: int, *, client: stripe.StripeClient | None = None
) -> MeterEventDelivery | None:
    """Prepare and send the meter event of one finished execution, once.

    Safe to run twice, or again after a worker died halfway: a delivered
    event is not sent again, and one that Stripe already has comes back as
    a duplicate, which counts as delivered.
    """
    execution = Execution.objects.filter(pk=execution_id).first()
    if execution is None:
        return None
    delivery = delivery_prepare(execution)
    if delivery is None or delivery.status != Status.PENDING:
        return delivery
    delivery_send(delivery, client=client or stripe_client())
    return delivery


def delivery_send(
    delivery: MeterEventDelivery,
    *,
    client: stripe.StripeClient,
    now: datetime | None = None,
) -> str:
    """Send one pending meter event through the v2 endpoint; return its new status.

    Transient errors are retried. When they persist the event stays
    pending for the next sweep, with the error recorded.
    """
    now = now or timezone.now()
    if _too_old(delivery, now):
        _set_aside_late(delivery, now)
        return delivery.status
    params = {
        "event_name": delivery.event_name,
        "identifier": delivery.identifier,
        "payload": event_payload(delivery),
        "timestamp": _rfc3339(delivery.timestamp),
    }
    attempts = 0

    def count_attempt():
        nonlocal attempts
        attempts += 1

    # One key for this send and its retries, so a retry of a request that
    # Stripe did take replays its response. A later send gets a new key, and
    # Stripe rejects it with a duplicate identifier error instead.
    options = {"idempotency_key": f"{delivery.identifier}-{uuid.uuid4().hex[:12]}"}
    try:
        call_with_retries(
            lambda: client.v2.billing.meter_events.create(params, options),
            description=f"Meter event {delivery.identifier}",
            on_attempt=count_attempt,
        )
    except stripe.StripeError as error:
        _record_failure(delivery, error, attempts, now)
    else:
        _mark_delivered([delivery], now, attempts=attempts)
    return delivery.status


def event_payload(delivery: MeterEventDelivery) -> dict[str, str]:
    """Return the meter event payload: the Stripe customer and the value, as strings."""
    return {
        CUSTOMER_PAYLOAD_KEY: delivery.stripe_customer_id,
        VALUE_PAYLOAD_KEY: plain_decimal(delivery.value),
    }


def is_duplicate_identifier(error: stripe.StripeError) -> bool:
    """Return whether Stripe rejected a meter event because it has its identifier.

    NOTE: matched on the error code or, failing that, on the message, since
    Stripe's API reference does not list the exact code of this error.
    """
    if error.http_status not in (400, 409):
        return False
    code = (error.code or "").lower()
    if "duplicate" in code:
        return True
    message = (getattr(error, "user_message", None) or str(error)).lower()
    return "identifier" in message and ("duplicate" in message or "already" in message)


def _record_failure(
    delivery: MeterEventDelivery,
    error: stripe.StripeError,
    attempts: int,
    now: datetime,
) -> None:
    if is_duplicate_identifier(error):
        logger.info(
            "Meter event %s: Stripe already has it; counted as delivered",
            delivery.identifier,
        )
        _mark_delivered([delivery], now, attempts=attempts)
        return
    delivery.attempts += attempts
    delivery.last_error = f"{type(error).__name__}: {error}"[:2000]
    fields = ["attempts", "last_error", "updated_at"]
    # A 400 rejects this event itself. Other errors (a revoked key, say)
    # would reject every event, so those stay pending until fixed.
    if error.http_status == 400:
        delivery.status = Status.EXCEPTION
        fields.append("status")
    delivery.save(update_fields=fields)
    if delivery.status == Status.EXCEPTION:
        logger.error(
            "Meter event %s: Stripe rejected it (%s); set aside for staff",
            delivery.identifier,
            error,
        )
        alert_raise(
            kind=Alert.Kind.STRIPE_METERING_FAILED,
            dedupe_key=f"stripe_meter_event_rejected:{delivery.identifier}",
            message=(
                f"Stripe rejected the meter event of execution {delivery.execution_id} "
                f"({error}). Bill it by hand or fix the cause and set it to pending."
            ),
            customer_id=delivery.customer_id,
            execution_id=delivery.execution_id,
        )
    else:
        logger.warning(
            "Meter event %s: not delivered after %s attempts (%s); left pending",
            delivery.identifier,
            attempts,
            error,
        )


def _mark_delivered(
    deliveries: Iterable[MeterEventDelivery], now: datetime, *, attempts: int
) -> None:
    for delivery in deliveries:
        delivery.status = Status.DELIVERED
        delivery.delivered_at = now
        delivery.attempts += attempts
        delivery.last_error = ""
        delivery.save(
            update_fields=[
                "status",
                "delivered_at",
                "attempts",
                "last_error",
                "updated_at",
            ]
        )


def _too_old(delivery: MeterEventDelivery, now: datetime) -> bool:
    return delivery.timestamp < now - STRIPE_MAX_EVENT_AGE + LATE_MARGIN


def _set_aside_late(delivery: MeterEventDelivery, now: datetime) -> None:
    """Make a meter event too old for Stripe an exception and tell staff.

    Its timestamp is never moved into Stripe's window: that would bill the
    usage in a period it does not belong to.
    """
    delivery.status = Status.EXCEPTION
    delivery.last_error = (
        f"Finished at {delivery.timestamp:%Y-%m-%d %H:%M} UTC, more than "
        f"{STRIPE_MAX_EVENT_AGE.days} days before {now:%Y-%m-%d %H:%M} UTC: Stripe no "
        "longer accepts it."
    )
    delivery.save(update_fields=["status", "last_error", "updated_at"])
    logger.warning(
        "Meter event %s: too old for Stripe; set aside for staff", delivery.identifier
    )
    alert_raise(
        kind=Alert.Kind.STRIPE_LATE_USAGE,
        dedupe_key=f"stripe_late_usage:{delivery.identifier}",
        message=(
            f"Execution {delivery.execution_id} finished on {delivery.timestamp:%Y-%m-%d} "
            f"and was never sent to Stripe, which takes usage up to "
            f"{STRIPE_MAX_EVENT_AGE.days} days old. Bill {delivery.value} "
            f"({delivery.event_name}) by hand."
        ),
        customer_id=delivery.customer_id,
        execution_id=delivery.execution_id,
    )


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# The sweep ------------------------------------------------------------------


def floor_hour(moment: datetime) -> datetime:
    """Return the start of the UTC hour containing `moment`."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def metering_sweep(
    *, now: datetime | None = None, client: stripe.StripeClient | None = None
) -> SweepResult:
    """Send the pending meter events of every complete hour since the checkpoint.

    Creates the missing delivery rows first, so an execution whose task
    was lost is metered too. Windows are handled in time order, and the
    checkpoint stops at the first one that still has a pending event, so
    the next run starts there again.
    """
    now = now or timezone.now()
    client = client or stripe_client()
    end = floor_hour(now)
    checkpoint, _ = RollupCheckpoint.objects.get_or_create(name=CHECKPOINT_NAME)
    start = checkpoint.high_water_mark or (end - STRIPE_MAX_EVENT_AGE)
    # The overlap catches executions committed after the checkpoint passed
    # their finish time.
    _prepare_missing(start - PREPARE_OVERLAP, end)
    result = SweepResult()
    settled_until = end
    # Stragglers before the checkpoint: rows created after it moved on.
    _send_window(
        MeterEventDelivery.objects.filter(status=Status.PENDING, timestamp__lt=start),
        client,
        now,
        result,
    )
    window_start = start
    while True:
        first = (
            MeterEventDelivery.objects.filter(
                status=Status.PENDING, timestamp__gte=window_start, timestamp__lt=end
            )
            .order_by("timestamp")
            .first()
        )
        if first is None:
            break
        window_start = floor_hour(first.timestamp)
        window_end = window_start + timedelta(hours=1)
        pending = MeterEventDelivery.objects.filter(
            status=Status.PENDING, timestamp__gte=window_start, timestamp__lt=window_end
        )
        left = _send_window(pending, client, now, result)
        if left:
            settled_until = window_start
            break
        window_start = window_end
    if checkpoint.high_water_mark is None or settled_until > checkpoint.high_water_mark:
        checkpoint.high_water_mark = settled_until
        checkpoint.save(update_fields=["high_water_mark", "updated_at"])
    result.checkpoint = checkpoint.high_water_mark
    _alert_on_lag(checkpoint.high_water_mark, now)
    logger.info(
        "Metering sweep: %s delivered, %s exceptions, %s pending; checkpoint %s",
        result.delivered,
        result.exceptions,
        result.pending,
        result.checkpoint,
    )
    return result


def _prepare_missing(start: datetime, end: datetime) -> None:
    executions = Execution.objects.filter(
        status=Execution.Status.SUCCEEDED,
        finished_at__gte=start,
        finished_at__lt=end,
        meter_event_delivery__isnull=True,
    ).order_by("pk")
    for execution in executions.iterator():
        delivery_prepare(execution)


def _send_window(
    pending, client: stripe.StripeClient, now: datetime, result: SweepResult
) -> int:
    """Send the pending events of one window; return how many are still pending."""
    deliveries = list(pending.order_by("timestamp", "pk"))
    if not deliveries:
        return 0
    if len(deliveries) >= settings.STRIPE_METER_STREAM_THRESHOLD:
        stream_send(deliveries, client=client, now=now)
    else:
        for delivery in deliveries:
            delivery_send(delivery, client=client, now=now)
    left = 0
    for delivery in deliveries:
        if delivery.status == Status.DELIVERED:
            result.delivered += 1
        elif delivery.status == Status.EXCEPTION:
            result.exceptions += 1
        else:
            left += 1
    result.pending += left
    return left


def _alert_on_lag(checkpoint: datetime, now: datetime) -> None:
    if now - checkpoint < CHECKPOINT_ALERT_LAG:
        return
    alert_raise(
        kind=Alert.Kind.STRIPE_METERING_FAILED,
        dedupe_key=f"stripe_metering_lag:{checkpoint:%Y-%m-%d}",
        message=(
            f"Meter events from {checkpoint:%Y-%m-%d %H:%M} UTC on are not all in "
            "Stripe yet. See the pending meter event deliveries and their errors."
        ),
    )


# The v2 meter event stream ------------------------------------------------


class StreamSession:
    """A v2 meter event session: a token valid for 15 minutes, renewed as needed."""

    def __init__(self, client: stripe.StripeClient):
        self.client = client
        self.token: str | None = None
        self.expires_at: datetime | None = None
        self.renewals = 0

    def token_at(self, now: datetime) -> str:
        """Return a session token valid at `now`, renewing the session if needed."""
        if self.token is None or now >= self.expires_at - SESSION_RENEW_MARGIN:
            self.renew()
        return self.token

    def renew(self) -> None:
        session = call_with_retries(
            lambda: self.client.v2.billing.meter_event_session.create(),
            description="Meter event session",
        )
        self.token = session.authentication_token
        expires_at = session.expires_at
        if isinstance(expires_at, str):
            expires_at = datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
        self.expires_at = expires_at
        self.renewals += 1
        logger.info("Meter event stream: new session valid until %s", expires_at)


def stream_send(
    deliveries: list[MeterEventDelivery],
    *,
    client: stripe.StripeClient,
    now: datetime | None = None,
    session: StreamSession | None = None,
) -> StreamSession:
    """Send pending meter events through the v2 stream, 100 per request.

    Stripe processes stream events later, so a request it accepts marks
    its events delivered, and a duplicate identifier is dropped by Stripe
    without an error. An expired session is renewed and the request sent
    again. A batch that keeps failing stays pending for the next sweep.
    """
    session = session or StreamSession(client)
    late = [d for d in deliveries if _too_old(d, now or timezone.now())]
    for delivery in late:
        _set_aside_late(delivery, now or timezone.now())
    sendable = [d for d in deliveries if d.status == Status.PENDING]
    for offset in range(0, len(sendable), STREAM_BATCH_SIZE):
        batch = sendable[offset : offset + STREAM_BATCH_SIZE]
        _stream_batch(batch, session)
    return session


def _stream_batch(batch: list[MeterEventDelivery], session: StreamSession) -> None:
    events = [
        {
            "event_name": delivery.event_name,
            "identifier": delivery.identifier,
            "payload": event_payload(delivery),
            "timestamp": _rfc3339(delivery.timestamp),
        }
        for delivery in batch
    ]
    attempts = 0

    def send():
        nonlocal attempts
        attempts += 1
        stream = session.client.v2.billing.meter_event_stream
        try:
            stream.create(
                {"events": events}, {"api_key": session.token_at(timezone.now())}
            )
        except stripe.TemporarySessionExpiredError:
            logger.info("Meter event stream: session expired; renewing")
            session.renew()
            stream.create({"events": events}, {"api_key": session.token})

    now = timezone.now()
    try:
        call_with_retries(send, description=f"Meter event stream of {len(batch)}")
    except stripe.StripeError as error:
        with transaction.atomic():
            for delivery in batch:
                delivery.attempts += attempts
                delivery.last_error = f"{type(error).__name__}: {error}"[:2000]
                delivery.save(update_fields=["attempts", "last_error", "updated_at"])
        logger.warning(
            "Meter event stream: %s events not delivered (%s); left pending",
            len(batch),
            error,
        )
        return
    with transaction.atomic():
        _mark_delivered(batch, now, attempts=attempts)
