"""Stripe webhook events: stored first, then processed through a table of handlers.

Events can arrive twice and out of order. A stored event id makes the
second delivery a no-op. Each object we mirror keeps the creation time
of the latest event applied to it, and an older event is not applied,
so state never moves backwards. For two events of the same second the
object is fetched from Stripe again, when a client is configured.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from datetime import UTC, datetime

import stripe
from django.db import IntegrityError, transaction
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


def event_store(payload: dict) -> tuple[StripeWebhookEvent, bool]:
    """Store a verified event unless its id is stored already; return it and whether new."""
    try:
        with transaction.atomic():
            event = StripeWebhookEvent.objects.create(
                event_id=payload["id"],
                type=payload.get("type", ""),
                created=int(payload.get("created") or 0),
                livemode=bool(payload.get("livemode")),
                payload=payload,
            )
    except IntegrityError:
        return StripeWebhookEvent.objects.get(event_id=payload["id"]), False
    return event, True


def event_process(event: StripeWebhookEvent) -> StripeWebhookEvent:
    """Apply a stored event in one transaction, once.

    An event already processed or ignored is left alone. A handler error
    rolls back its changes, is stored with its traceback and is raised
    again, so the view returns 500 and Stripe sends the event again.
    """
    try:
        with transaction.atomic():
            locked = StripeWebhookEvent.objects.select_for_update().get(pk=event.pk)
            if locked.status in (
                StripeWebhookEvent.Status.PROCESSED,
                StripeWebhookEvent.Status.IGNORED,
            ):
                return locked
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
    except Exception:
        StripeWebhookEvent.objects.filter(pk=event.pk).update(
            status=StripeWebhookEvent.Status.FAILED, error=traceback.format_exc()
        )
        logger.exception(
            "Stripe event %s (%s): processing failed", event.event_id, event.type
        )
        raise
    logger.info("Stripe event %s (%s): %s", locked.event_id, locked.type, locked.status)
    return locked


def _object(payload: dict) -> dict:
    return payload.get("data", {}).get("object", {}) or {}


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
        stripe_subscription_id=obj.get("id", "")
    ).first()
    if found is not None:
        return found
    our_id = (obj.get("metadata") or {}).get("agentmargin_subscription_id", "")
    if our_id.isdigit():
        return Subscription.objects.filter(pk=int(our_id)).first()
    return None


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

    status = obj.get("status", "")
    if event.type == "customer.subscription.deleted":
        status = "canceled"
    subscription.stripe_subscription_id = obj.get("id", "")
    subscription.stripe_status = status
    subscription.stripe_event_created = event.created
    fields = ["stripe_subscription_id", "stripe_status", "stripe_event_created"]
    ours = SUBSCRIPTION_STATUS.get(status)
    if ours is not None and subscription.status != Subscription.Status.CANCELED:
        subscription.status = ours
        fields.append("status")
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
    invoice_id = obj.get("id")
    if not invoice_id:
        return None
    mirror, _ = StripeInvoice.objects.select_for_update().get_or_create(
        stripe_id=invoice_id
    )
    status = obj.get("status") or ""
    if _is_older(mirror.stripe_event_created, event.created):
        return mirror
    if INVOICE_STATUS_RANK.get(status, 0) < INVOICE_STATUS_RANK.get(mirror.status, 0):
        return mirror
    customer_id = obj.get("customer") or ""
    if isinstance(customer_id, dict):
        customer_id = customer_id.get("id", "")
    subscription_id = obj.get("subscription") or _parent_subscription(obj)
    mirror.customer = Customer.objects.filter(stripe_customer_id=customer_id).first()
    mirror.stripe_customer_id = customer_id
    mirror.stripe_subscription_id = subscription_id or ""
    mirror.number = obj.get("number") or ""
    mirror.status = status
    mirror.currency = obj.get("currency") or ""
    mirror.total = obj.get("total") or 0
    mirror.amount_due = obj.get("amount_due") or 0
    mirror.amount_paid = obj.get("amount_paid") or 0
    mirror.amount_remaining = obj.get("amount_remaining") or 0
    mirror.period_start = _timestamp(obj.get("period_start"))
    mirror.period_end = _timestamp(obj.get("period_end"))
    mirror.hosted_invoice_url = obj.get("hosted_invoice_url") or ""
    mirror.stripe_created = obj.get("created")
    mirror.stripe_event_created = event.created
    mirror.save()
    return mirror


def _parent_subscription(obj: dict) -> str:
    # Recent API versions move the subscription under parent.subscription_details.
    details = (obj.get("parent") or {}).get("subscription_details") or {}
    return details.get("subscription") or ""


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
