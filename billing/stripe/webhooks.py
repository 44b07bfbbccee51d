"""Stripe webhook events: stored first, then processed through a table of handlers.

Events can arrive twice and out of order. A stored event id makes the
second delivery a no-op. Each object we mirror keeps the creation time
of the latest event applied to it, and an older event is not applied,
so state never moves backwards. For two events of the same second the
object is fetched from Stripe again, when a client is configured.

A signed event whose payload can never be processed (a missing object,
a field of the wrong type) is stored as failed with the reason, logged
and raised as a staff alert. The endpoint returns 200 for it, so Stripe
stops sending it. A database error, or any other unexpected error, is
answered with 500 so that Stripe sends the event again.
"""

from __future__ import annotations

import hashlib
import logging
import traceback
from collections.abc import Callable
from datetime import UTC, date, datetime

import stripe
from django.db import DatabaseError, DataError, IntegrityError, transaction
from django.utils import timezone

from billing.alerts import alert_raise
from billing.models import Alert, StripeInvoice, StripeWebhookEvent, Subscription
from billing.stripe.client import stripe_client, stripe_enabled
from customers.models import Customer

logger = logging.getLogger(__name__)

Handler = Callable[[dict, StripeWebhookEvent], bool]

# Stripe subscription status -> ours. Statuses missing here (incomplete,
# paused) leave our status as it is.
SUBSCRIPTION_STATUS = {
    "active": Subscription.Status.ACTIVE,
    "trialing": Subscription.Status.ACTIVE,
    "past_due": Subscription.Status.PAST_DUE,
    "unpaid": Subscription.Status.PAST_DUE,
    "canceled": Subscription.Status.CANCELED,
    "incomplete_expired": Subscription.Status.CANCELED,
}
# Invoice statuses in the order an invoice moves through them; an event
# never moves an invoice to an earlier one.
INVOICE_STATUS_RANK = {"draft": 0, "open": 1, "paid": 2, "uncollectible": 2, "void": 2}
# Invoice statuses after which a failed payment no longer makes the customer past due.
INVOICE_SETTLED = {"paid", "void", "uncollectible"}

# Alert kind of an event stored as failed because its payload is malformed.
MALFORMED_EVENT_ALERT_KIND = Alert.Kind.STRIPE_WEBHOOK_FAILED
MALFORMED_PREFIX = "Malformed event: "
UNREADABLE_BODY_KEPT_CHARS = 100_000
EVENT_ID_MAX_LENGTH = StripeWebhookEvent._meta.get_field("event_id").max_length
EVENT_TYPE_MAX_LENGTH = StripeWebhookEvent._meta.get_field("type").max_length


class MalformedEvent(ValueError):
    """A payload that can never be processed, however often Stripe sends it."""


def event_store(payload: dict) -> tuple[StripeWebhookEvent, bool]:
    """Store a verified event unless its id is stored already; return it and whether new.

    `payload` must have a string `id` (see `event_id_of`). A `type` or
    `created` of the wrong type is stored as "" or 0, and `event_process`
    then marks the event failed.
    Raises MalformedEvent when the database rejects the payload (PostgreSQL
    stores no NUL character in JSON, for one).
    """
    event_type = payload.get("type")
    created = payload.get("created")
    try:
        with transaction.atomic():
            event = StripeWebhookEvent.objects.create(
                event_id=payload["id"],
                type=event_type if _is_text(event_type, EVENT_TYPE_MAX_LENGTH) else "",
                created=created if _is_integer(created) else 0,
                livemode=payload.get("livemode") is True,
                payload=payload,
            )
    except IntegrityError:
        return StripeWebhookEvent.objects.get(event_id=payload["id"]), False
    except DataError as exc:
        raise MalformedEvent(f"the database rejected the payload: {exc}") from exc
    return event, True


def event_store_unreadable(
    event_id: str, body: str, reason: str
) -> tuple[StripeWebhookEvent, bool]:
    """Store a signed body that is not a usable event as a failed event; return it and whether new.

    The body is kept as text (NUL characters removed, at most
    UNREADABLE_BODY_KEPT_CHARS) under `event_id`, and a new one is logged
    and raised as a staff alert.
    """
    stored_body = body.replace("\x00", "")[:UNREADABLE_BODY_KEPT_CHARS]
    event, created = StripeWebhookEvent.objects.get_or_create(
        event_id=event_id,
        defaults={
            "type": "",
            "created": 0,
            "payload": {"id": event_id, "unreadable_body": stored_body},
        },
    )
    if created:
        event = _event_malformed(event, MalformedEvent(reason))
    return event, created


def event_id_of(payload, body: bytes) -> str:
    """Return the event's id, or one made from the body's hash when it has no usable id.

    A signed body without an id is still stored, under `malformed_<hash>`,
    so that staff see it and a second delivery of it is a duplicate.
    """
    if isinstance(payload, dict):
        event_id = payload.get("id")
        if _is_text(event_id, EVENT_ID_MAX_LENGTH) and event_id:
            return event_id
    return "malformed_" + hashlib.sha256(body).hexdigest()[:48]


def _is_text(value, max_length: int | None = None) -> bool:
    return isinstance(value, str) and (max_length is None or len(value) <= max_length)


def _is_integer(value) -> bool:
    # bool is a subclass of int, but True is not a timestamp or an amount.
    return isinstance(value, int) and not isinstance(value, bool)


def _check_envelope(payload) -> None:
    """Raise MalformedEvent unless the event's own fields have Stripe's types."""
    if not isinstance(payload, dict):
        raise MalformedEvent("the body is not a JSON object")
    if not _is_text(payload.get("id"), EVENT_ID_MAX_LENGTH) or not payload.get("id"):
        raise MalformedEvent(
            f"id is missing or not a string of at most {EVENT_ID_MAX_LENGTH} characters"
        )
    if not _is_text(payload.get("type"), EVENT_TYPE_MAX_LENGTH):
        raise MalformedEvent(
            f"type is missing or not a string of at most {EVENT_TYPE_MAX_LENGTH} "
            "characters"
        )
    created = payload.get("created")
    if not _is_integer(created) or created < 0:
        raise MalformedEvent(
            f"created is {created!r}, expected Unix seconds as an integer"
        )


def event_process(event: StripeWebhookEvent) -> StripeWebhookEvent:
    """Apply a stored event in one transaction, once.

    An event already processed or ignored is left alone. A malformed
    payload rolls back the handler's changes, marks the event failed with
    the reason, raises a staff alert and returns the failed event, since
    sending it again cannot help. Any other error rolls back, is stored
    with its traceback and is raised again, so the view returns 500 and
    Stripe sends the event again.
    """
    try:
        with transaction.atomic():
            locked = StripeWebhookEvent.objects.select_for_update().get(pk=event.pk)
            if locked.status in (
                StripeWebhookEvent.Status.PROCESSED,
                StripeWebhookEvent.Status.IGNORED,
            ):
                return locked
            _check_envelope(locked.payload)
            handler = HANDLERS.get(locked.type)
            applied = handler(locked.payload, locked) if handler else False
            locked.status = (
                StripeWebhookEvent.Status.PROCESSED
                if applied
                else StripeWebhookEvent.Status.IGNORED
            )
            locked.processed_at = timezone.now()
            locked.error = ""
            locked.save(update_fields=["status", "processed_at", "error"])
    except (MalformedEvent, DataError) as exc:
        return _event_malformed(event, exc)
    except Exception:
        StripeWebhookEvent.objects.filter(pk=event.pk).update(
            status=StripeWebhookEvent.Status.FAILED, error=traceback.format_exc()
        )
        logger.exception(
            "Stripe event %s (%s): processing failed; Stripe will send it again",
            event.event_id,
            event.type,
        )
        raise
    logger.info("Stripe event %s (%s): %s", locked.event_id, locked.type, locked.status)
    return locked


def event_is_malformed(event: StripeWebhookEvent) -> bool:
    """Return whether the event failed because its payload can never be processed."""
    return event.status == StripeWebhookEvent.Status.FAILED and event.error.startswith(
        MALFORMED_PREFIX
    )


def _event_malformed(event: StripeWebhookEvent, error: Exception) -> StripeWebhookEvent:
    """Mark the event failed for good, log it and raise a staff alert."""
    reason = f"{MALFORMED_PREFIX}{error}"
    StripeWebhookEvent.objects.filter(pk=event.pk).update(
        status=StripeWebhookEvent.Status.FAILED,
        processed_at=timezone.now(),
        error=f"{reason}\n\n{traceback.format_exc()}",
    )
    logger.error(
        "Stripe event %s (%s): malformed, stored as failed and not retried: %s",
        event.event_id,
        event.type,
        error,
    )
    try:
        alert_raise(
            kind=MALFORMED_EVENT_ALERT_KIND,
            severity=Alert.Severity.CRITICAL,
            dedupe_key=f"stripe_webhook_failed:{event.event_id}"[:200],
            message=(
                f"Stripe event {event.event_id} ({event.type or 'no type'}) cannot be "
                f"processed and was stored as failed: {error}. Check the event in "
                "Stripe webhook events and apply its change by hand if it matters."
            ),
        )
    except DatabaseError:
        logger.exception(
            "Stripe event %s: the alert about its failure could not be stored",
            event.event_id,
        )
    event.refresh_from_db()
    return event


def _object(payload: dict) -> dict:
    data = payload.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise MalformedEvent("data.object is missing or not a JSON object")
    return data["object"]


def _text_field(obj: dict, name: str, *, required: bool = False) -> str:
    """Return a string field of a Stripe object, "" when absent and optional."""
    value = obj.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise MalformedEvent(
            f"data.object.{name} is {value!r}, expected a non-empty string"
            if required
            else f"data.object.{name} is {value!r}, expected a string"
        )
    return value


def _integer_field(obj: dict, name: str) -> int | None:
    """Return an integer field of a Stripe object, or None when it is absent or null."""
    value = obj.get(name)
    if value is None:
        return None
    if not _is_integer(value):
        raise MalformedEvent(f"data.object.{name} is {value!r}, expected an integer")
    return value


def _id_field(obj: dict, name: str) -> str:
    """Return the id of a field that is an id, an expanded object or null."""
    value = obj.get(name)
    if isinstance(value, dict):
        return _text_field(value, "id")
    return _text_field(obj, name)


def _is_older(stored: int | None, created: int) -> bool:
    return stored is not None and created < stored


def _refetch(kind: str, object_id: str) -> dict | None:
    """Return the current object from Stripe, or None when Stripe is not configured."""
    if not stripe_enabled():
        return None
    client = stripe_client()
    service = client.v1.subscriptions if kind == "subscription" else client.v1.invoices
    try:
        return service.retrieve(object_id).to_dict()
    except stripe.StripeError as error:
        logger.warning("Stripe %s %s: fetch failed (%s)", kind, object_id, error)
        return None


# Subscriptions ----------------------------------------------------------------


def _find_subscription(obj: dict) -> Subscription | None:
    found = Subscription.objects.filter(
        stripe_subscription_id=_text_field(obj, "id", required=True)
    ).first()
    if found is not None:
        return found
    metadata = obj.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise MalformedEvent(
            f"data.object.metadata is {metadata!r}, expected an object"
        )
    our_id = _text_field(metadata, "agentmargin_subscription_id")
    if our_id.isascii() and our_id.isdigit():
        return Subscription.objects.filter(pk=int(our_id)).first()
    return None


def _ended_on(obj: dict, event: StripeWebhookEvent) -> date:
    """Return the UTC day a canceled Stripe subscription ended.

    That is `ended_at`, else `canceled_at`, else the event's creation time.
    """
    ended_at = _integer_field(obj, "ended_at")
    if ended_at is None:
        ended_at = _integer_field(obj, "canceled_at")
    if ended_at is None:
        ended_at = event.created
    return datetime.fromtimestamp(ended_at, tz=UTC).date()


def on_subscription_event(payload: dict, event: StripeWebhookEvent) -> bool:
    """Mirror a subscription's status, unless a later event was applied already."""
    obj = _object(payload)
    subscription = _find_subscription(obj)
    if subscription is None:
        logger.info(
            "Stripe event %s: unknown subscription %s", event.event_id, obj.get("id")
        )
        return False

    subscription = Subscription.objects.select_for_update().get(pk=subscription.pk)
    if _is_older(subscription.stripe_event_created, event.created):
        logger.info(
            "Subscription %s: Stripe event %s is older than the last applied; skipped",
            subscription.pk,
            event.event_id,
        )
        return True
    if subscription.stripe_event_created == event.created:
        # Two events of the same second cannot be ordered, so fetch the current object.
        obj = _refetch("subscription", obj["id"]) or obj

    status = _text_field(obj, "status")
    if event.type == "customer.subscription.deleted":
        status = "canceled"
    subscription.stripe_subscription_id = _text_field(obj, "id", required=True)
    subscription.stripe_status = status
    subscription.stripe_event_created = event.created
    fields = ["stripe_subscription_id", "stripe_status", "stripe_event_created"]
    ours = SUBSCRIPTION_STATUS.get(status)
    if ours is not None and subscription.status != Subscription.Status.CANCELED:
        subscription.status = ours
        fields.append("status")
    if ours == Subscription.Status.CANCELED and subscription.ended_on is None:
        # The period-close job closes a canceled subscription's periods up
        # to ended_on, so without it the last period would never be closed.
        subscription.ended_on = max(_ended_on(obj, event), subscription.started_on)
        fields.append("ended_on")
    subscription.save(update_fields=fields)

    logger.info(
        "Subscription %s: Stripe status %s from event %s",
        subscription.pk,
        status,
        event.event_id,
    )
    return True


# Invoices -----------------------------------------------------------------


def _timestamp(value) -> datetime | None:
    return datetime.fromtimestamp(int(value), tz=UTC) if value else None


def invoice_mirror(obj: dict, event: StripeWebhookEvent) -> StripeInvoice | None:
    """Create or update the read-only copy of a Stripe invoice from an event.

    An event older than the last one applied, or one that would move the
    status back (paid to open, say), changes nothing.
    """
    invoice_id = _text_field(obj, "id", required=True)
    status = _text_field(obj, "status")
    customer_id = _id_field(obj, "customer")
    subscription_id = _id_field(obj, "subscription") or _parent_subscription(obj)
    amounts = {
        name: _integer_field(obj, name) or 0
        for name in ("total", "amount_due", "amount_paid", "amount_remaining")
    }
    period_start = _integer_field(obj, "period_start")
    period_end = _integer_field(obj, "period_end")
    stripe_created = _integer_field(obj, "created")
    number = _text_field(obj, "number")
    currency = _text_field(obj, "currency")
    hosted_invoice_url = _text_field(obj, "hosted_invoice_url")

    mirror, _ = StripeInvoice.objects.select_for_update().get_or_create(
        stripe_id=invoice_id
    )
    if _is_older(mirror.stripe_event_created, event.created):
        return mirror
    if INVOICE_STATUS_RANK.get(status, 0) < INVOICE_STATUS_RANK.get(mirror.status, 0):
        return mirror
    mirror.customer = Customer.objects.filter(stripe_customer_id=customer_id).first()
    mirror.stripe_customer_id = customer_id
    mirror.stripe_subscription_id = subscription_id
    mirror.number = number
    mirror.status = status
    mirror.currency = currency
    mirror.total = amounts["total"]
    mirror.amount_due = amounts["amount_due"]
    mirror.amount_paid = amounts["amount_paid"]
    mirror.amount_remaining = amounts["amount_remaining"]
    mirror.period_start = _timestamp(period_start)
    mirror.period_end = _timestamp(period_end)
    mirror.hosted_invoice_url = hosted_invoice_url
    mirror.stripe_created = stripe_created
    mirror.stripe_event_created = event.created
    mirror.save()
    return mirror


def _parent_subscription(obj: dict) -> str:
    # Recent API versions move the subscription under parent.subscription_details.
    parent = obj.get("parent") or {}
    details = parent.get("subscription_details") if isinstance(parent, dict) else None
    if not details:
        return ""
    if not isinstance(details, dict):
        raise MalformedEvent(
            f"data.object.parent.subscription_details is {details!r}, expected an object"
        )
    return _id_field(details, "subscription")


def on_invoice_event(payload: dict, event: StripeWebhookEvent) -> bool:
    """Mirror the invoice of an invoice.created, finalized or paid event."""
    mirror = invoice_mirror(_object(payload), event)
    if mirror is None:
        return False
    if event.type == "invoice.paid" and mirror.customer is not None:
        _customer_back_to_active(mirror.customer)
    return True


def on_invoice_payment_failed(payload: dict, event: StripeWebhookEvent) -> bool:
    """Mirror the invoice, mark its customer past due and raise an alert."""
    mirror = invoice_mirror(_object(payload), event)
    if mirror is None or mirror.customer is None:
        return False
    if _is_older(mirror.stripe_event_created, event.created) or (
        mirror.status in INVOICE_SETTLED
    ):
        # A later event was applied already, or the invoice is paid (or
        # void): this failure is out of date and changes nothing.
        logger.info(
            "Invoice %s: payment failure of event %s is older than its %s state; "
            "customer %s left as it is",
            mirror.stripe_id,
            event.event_id,
            mirror.status,
            mirror.customer.slug,
        )
        return True
    customer = mirror.customer
    Customer.objects.filter(pk=customer.pk).update(status=Customer.Status.PAST_DUE)
    alert_raise(
        kind=Alert.Kind.STRIPE_PAYMENT_FAILED,
        severity=Alert.Severity.CRITICAL,
        dedupe_key=f"stripe_payment_failed:{mirror.stripe_id}",
        message=(
            f"Payment of Stripe invoice {mirror.number or mirror.stripe_id} "
            f"({mirror.amount_due} {mirror.currency} minor units) failed; "
            f"{customer.slug} is now past due."
        ),
        customer_id=customer.pk,
    )
    logger.warning(
        "Customer %s: payment of invoice %s failed; marked past due",
        customer.slug,
        mirror.stripe_id,
    )
    return True


def _customer_back_to_active(customer: Customer) -> None:
    updated = Customer.objects.filter(
        pk=customer.pk, status=Customer.Status.PAST_DUE
    ).update(status=Customer.Status.ACTIVE)
    if updated:
        logger.info("Customer %s: invoice paid; active again", customer.slug)


def on_invoice_upcoming(payload: dict, event: StripeWebhookEvent) -> bool:
    """Log an upcoming invoice. It is a preview with no id, so nothing is mirrored."""
    obj = _object(payload)
    _id_field(obj, "customer")
    _integer_field(obj, "amount_due")
    logger.info(
        "Stripe customer %s: upcoming invoice of %s %s",
        obj.get("customer"),
        obj.get("amount_due"),
        obj.get("currency"),
    )
    return True


HANDLERS: dict[str, Handler] = {
    "customer.subscription.created": on_subscription_event,
    "customer.subscription.updated": on_subscription_event,
    "customer.subscription.deleted": on_subscription_event,
    "invoice.created": on_invoice_event,
    "invoice.finalized": on_invoice_event,
    "invoice.paid": on_invoice_event,
    "invoice.payment_failed": on_invoice_payment_failed,
    "invoice.upcoming": on_invoice_upcoming,
}
