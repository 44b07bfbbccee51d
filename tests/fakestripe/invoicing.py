"""Invoice items, invoices, the period-end cycle and events.

A subscription is invoiced as Stripe bills it: licensed (flat) items in
advance for the coming period, metered items in arrears from the meter's
usage in the period that ended, plus the customer's pending invoice items.
Payment succeeds at once unless ``fake.fail_next_payment`` was called.
"""

import copy
from decimal import Decimal

from . import metering
from .listing import paginate
from .objects import add_months, build, list_object
from .tiers import amount_for_quantity
from .wire import FakeStripeError, invalid, new_id

PAYMENT_RETRY_SECONDS = 3 * 24 * 60 * 60


# Lines.


def _line(fake, *, amount, currency, description, period, quantity, price, parent):
    return build(
        "line_item",
        id=new_id("il_", 24),
        amount=amount,
        subtotal=amount,
        currency=currency,
        description=description,
        discount_amounts=[],
        discountable=True,
        discounts=[],
        invoice=None,
        livemode=False,
        metadata={},
        period={"start": period[0], "end": period[1]},
        quantity=_plain(quantity),
        quantity_decimal=str(quantity),
        subscription=None,
        pretax_credit_amounts=[],
        taxes=[],
        parent=parent,
        pricing={
            "type": "price_details",
            "price_details": {
                "price": price["id"] if price else None,
                "product": price["product"] if price else None,
            },
            "unit_amount_decimal": price.get("unit_amount_decimal") if price else None,
        },
    )


def _plain(quantity):
    quantity = Decimal(str(quantity))
    return (
        int(quantity) if quantity == quantity.to_integral_value() else float(quantity)
    )


def _item_parent(subscription_id, item_id):
    return {
        "type": "subscription_item_details",
        "invoice_item_details": None,
        "subscription_item_details": {
            "invoice_item": None,
            "proration": False,
            "proration_details": {"credited_items": None},
            "subscription": subscription_id,
            "subscription_item": item_id,
        },
    }


def _describe(fake, price, quantity):
    product = fake.store["product"].get(price["product"], {})
    name = product.get("name", price["product"])
    if price["billing_scheme"] == "tiered":
        return f"{_plain(quantity)} × {name} (tiered)"
    unit = Decimal(price["unit_amount_decimal"]) / 100
    return f"{_plain(quantity)} × {name} (at ${unit:.2f} / {price['recurring']['interval']})"


def licensed_lines(fake, subscription, period):
    from .subscriptions import items_of

    lines = []
    for item in items_of(fake, subscription["id"]):
        price = fake.store["price"][item["price"]["id"]]
        if price["recurring"]["usage_type"] == "metered":
            continue
        quantity = item.get("quantity", 1)
        lines.append(
            _line(
                fake,
                amount=amount_for_quantity(price, quantity),
                currency=price["currency"],
                description=_describe(fake, price, quantity),
                period=period,
                quantity=quantity,
                price=price,
                parent=_item_parent(subscription["id"], item["id"]),
            )
        )
    return lines


def metered_lines(fake, subscription, start, end):
    """Price each metered item from its meter's usage in [start, end)."""
    from .subscriptions import items_of

    lines = []
    for item in items_of(fake, subscription["id"]):
        price = fake.store["price"][item["price"]["id"]]
        if price["recurring"]["usage_type"] != "metered":
            continue
        usage = metering.meter_usage(
            fake, price["recurring"]["meter"], subscription["customer"], start, end
        )
        lines.append(
            _line(
                fake,
                amount=amount_for_quantity(price, usage),
                currency=price["currency"],
                description=_describe(fake, price, usage),
                period=(start, end),
                quantity=usage,
                price=price,
                parent=_item_parent(subscription["id"], item["id"]),
            )
        )
    return lines


def pending_item_lines(fake, customer_id, subscription_id, *, claim_for=None):
    """Lines for the customer's pending invoice items; ``claim_for`` attaches them."""
    lines = []
    for invoice_item in fake.store["invoiceitem"].values():
        if invoice_item["customer"] != customer_id or invoice_item["invoice"]:
            continue
        owner = _invoice_item_subscription(invoice_item)
        if owner not in (None, subscription_id):
            continue
        price_id = invoice_item["pricing"]["price_details"]["price"]
        line = _line(
            fake,
            amount=invoice_item["amount"],
            currency=invoice_item["currency"],
            description=invoice_item["description"],
            period=(invoice_item["period"]["start"], invoice_item["period"]["end"]),
            quantity=invoice_item["quantity"],
            price=fake.store["price"].get(price_id),
            parent={
                "type": "invoice_item_details",
                "subscription_item_details": None,
                "invoice_item_details": {
                    "invoice_item": invoice_item["id"],
                    "proration": invoice_item["proration"],
                    "proration_details": {"credited_items": None},
                    "subscription": owner,
                },
            },
        )
        line["metadata"] = dict(invoice_item["metadata"])
        lines.append(line)
        if claim_for:
            invoice_item["invoice"] = claim_for
    return lines


def _invoice_item_subscription(invoice_item):
    parent = invoice_item.get("parent") or {}
    return (parent.get("subscription_details") or {}).get("subscription")


# Invoices.


def _new_invoice(fake, subscription, *, reason, period, lines, invoice_id=None):
    customer = fake.store["customer"].get(subscription["customer"], {})
    invoice_id = invoice_id or fake.next_id("invoice")
    for line in lines:
        line["invoice"] = invoice_id
    total = sum(line["amount"] for line in lines)
    return build(
        "invoice",
        id=invoice_id,
        account_name="AgentMargin fake account",
        amount_due=total,
        amount_paid=0,
        amount_remaining=total,
        attempt_count=0,
        attempted=False,
        auto_advance=True,
        billing_reason=reason,
        collection_method=subscription["collection_method"],
        created=fake.now,
        currency=subscription["currency"],
        customer=subscription["customer"],
        customer_email=customer.get("email"),
        customer_name=customer.get("name"),
        discounts=[],
        lines=list_object(lines, f"/v1/invoices/{invoice_id}/lines"),
        metadata={},
        number=None,
        parent={
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {
                "metadata": dict(subscription["metadata"]),
                "subscription": subscription["id"],
            },
        },
        period_start=period[0],
        period_end=period[1],
        status="draft",
        status_transitions={
            "finalized_at": None,
            "marked_uncollectible_at": None,
            "paid_at": None,
            "voided_at": None,
        },
        subscription=subscription["id"],
        subtotal=total,
        subtotal_excluding_tax=total,
        total=total,
        total_excluding_tax=total,
        total_discount_amounts=[],
        total_pretax_credit_amounts=[],
        total_taxes=[],
    )


def _issue(fake, invoice, context, *, fail, collect=True):
    """Send the invoice through draft, open and paid (or payment_failed).

    A ``send_invoice`` invoice, or one issued with ``collect=False``, stays
    open for the customer to pay.
    """
    fake.emit("invoice.created", invoice, context=context)
    fake._invoice_numbers += 1
    prefix = (
        fake.store["customer"]
        .get(invoice["customer"], {})
        .get("invoice_prefix", "FAKE")
    )
    invoice["number"] = f"{prefix}-{fake._invoice_numbers:04d}"
    invoice["status"] = "open"
    invoice["effective_at"] = fake.now
    invoice["status_transitions"]["finalized_at"] = fake.now
    if invoice["collection_method"] == "send_invoice":
        subscription = fake.store["subscription"].get(invoice["subscription"]) or {}
        days = subscription.get("days_until_due") or 0
        invoice["due_date"] = fake.now + days * 24 * 60 * 60
        collect = False
    fake.emit("invoice.finalized", invoice, context=context)
    if collect or invoice["amount_due"] == 0:
        _attempt_payment(fake, invoice, context, fail=fail)


def _attempt_payment(fake, invoice, context, *, fail):
    subscription = fake.store["subscription"].get(invoice["subscription"])
    if fail and invoice["amount_due"] > 0:
        invoice["attempted"] = True
        invoice["attempt_count"] += 1
        invoice["next_payment_attempt"] = fake.now + PAYMENT_RETRY_SECONDS
        fake.emit("invoice.payment_failed", invoice, context=context)
        if subscription and subscription["status"] == "active":
            _set_status(fake, subscription, "past_due", context)
        return
    invoice["attempted"] = invoice["amount_due"] > 0
    invoice["attempt_count"] += 1 if invoice["amount_due"] > 0 else 0
    invoice["amount_paid"] = invoice["amount_due"]
    invoice["amount_remaining"] = 0
    invoice["next_payment_attempt"] = None
    invoice["status"] = "paid"
    invoice["status_transitions"]["paid_at"] = fake.now
    fake.emit("invoice.paid", invoice, context=context)
    fake.emit("invoice.payment_succeeded", invoice, context=context)
    if subscription and subscription["status"] in ("past_due", "incomplete"):
        _set_status(fake, subscription, "active", context)


def _set_status(fake, subscription, status, context):
    previous = {"status": subscription["status"]}
    subscription["status"] = status
    fake.emit(
        "customer.subscription.updated",
        subscription,
        context=context,
        previous=previous,
    )


def _take_payment_failure(fake, customer_id):
    if customer_id in fake._failing_customers:
        fake._failing_customers.discard(customer_id)
        return True
    return False


def start_invoice(fake, subscription, *, collect=True):
    """Build the first period's invoice of licensed items, as Stripe does on creation.

    Without ``collect`` (``payment_behavior=default_incomplete``) the
    subscription is ``incomplete`` until this invoice is paid. Issue it with
    ``issue_start_invoice`` once ``customer.subscription.created`` is out.
    """
    from .subscriptions import period

    current = period(fake, subscription["id"])
    lines = licensed_lines(fake, subscription, current)
    invoice = _new_invoice(
        fake,
        subscription,
        reason="subscription_create",
        period=(fake.now, fake.now),
        lines=lines,
    )
    fake.put("invoice", invoice)
    subscription["latest_invoice"] = invoice["id"]
    if not collect and invoice["amount_due"] > 0:
        subscription["status"] = "incomplete"
    return invoice


def issue_start_invoice(fake, invoice, context, *, collect=True):
    _issue(fake, invoice, context, fail=False, collect=collect)


def close_period(fake, subscription_id):
    """Invoice the period that ends now and start the next one (see FakeStripe)."""
    from .subscriptions import period, refresh

    subscription = fake.get("subscription", subscription_id)
    if subscription["status"] not in ("active", "past_due"):
        raise ValueError(
            f"Subscription {subscription_id} is {subscription['status']}; only an "
            "active or past_due subscription has a period to close."
        )
    start, end = period(fake, subscription_id)
    if fake.now < end:
        fake.set_time(end)
    before = copy.deepcopy(subscription)
    ending = subscription["cancel_at_period_end"]
    cycle = fake.subscription_cycles[subscription_id]
    next_end = add_months(cycle["anchor"], cycle["index"] + 1)
    invoice_id = fake.next_id("invoice")
    lines = []
    if not ending:
        lines += licensed_lines(fake, subscription, (end, next_end))
    lines += metered_lines(fake, subscription, start, end)
    lines += pending_item_lines(
        fake, subscription["customer"], subscription_id, claim_for=invoice_id
    )
    invoice = _new_invoice(
        fake,
        subscription,
        reason="subscription_cycle",
        period=(start, end),
        lines=lines,
        invoice_id=invoice_id,
    )
    fake.put("invoice", invoice)
    subscription["latest_invoice"] = invoice_id
    if ending:
        subscription.update(status="canceled", canceled_at=end, ended_at=end)
        refresh(fake, subscription)
        fake.emit("customer.subscription.deleted", subscription)
    else:
        cycle["index"] += 1
        refresh(fake, subscription)
        previous = {
            "latest_invoice": before["latest_invoice"],
            "items": before["items"],
        }
        fake.emit("customer.subscription.updated", subscription, previous=previous)
    _issue(
        fake, invoice, None, fail=_take_payment_failure(fake, subscription["customer"])
    )
    return copy.deepcopy(invoice)


def invoice_usage_to_now(fake, subscription, context):
    """Bill metered usage since the period start, for a cancellation with invoice_now."""
    from .subscriptions import period

    start, _ = period(fake, subscription["id"])
    invoice_id = fake.next_id("invoice")
    lines = metered_lines(fake, subscription, start, fake.now)
    lines += pending_item_lines(
        fake, subscription["customer"], subscription["id"], claim_for=invoice_id
    )
    invoice = _new_invoice(
        fake,
        subscription,
        reason="subscription_cycle",
        period=(start, fake.now),
        lines=lines,
        invoice_id=invoice_id,
    )
    fake.put("invoice", invoice)
    subscription["latest_invoice"] = invoice_id
    _issue(
        fake,
        invoice,
        context,
        fail=_take_payment_failure(fake, subscription["customer"]),
    )
    return invoice


def invoice_pending_now(fake, subscription, context):
    """Bill the subscription's pending invoice items now (``always_invoice``)."""
    invoice_id = fake.next_id("invoice")
    lines = pending_item_lines(
        fake, subscription["customer"], subscription["id"], claim_for=invoice_id
    )
    invoice = _new_invoice(
        fake,
        subscription,
        reason="subscription_update",
        period=(fake.now, fake.now),
        lines=lines,
        invoice_id=invoice_id,
    )
    fake.put("invoice", invoice)
    subscription["latest_invoice"] = invoice_id
    fail = _take_payment_failure(fake, subscription["customer"])
    _issue(fake, invoice, context, fail=fail)
    return invoice


def preview(fake, subscription):
    """Build, without storing, the invoice the next period close would create."""
    from .subscriptions import period

    start, end = period(fake, subscription["id"])
    cycle = fake.subscription_cycles[subscription["id"]]
    lines = []
    if not subscription["cancel_at_period_end"]:
        lines += licensed_lines(
            fake, subscription, (end, add_months(cycle["anchor"], cycle["index"] + 1))
        )
    lines += metered_lines(fake, subscription, start, min(end, fake.now + 1))
    lines += pending_item_lines(fake, subscription["customer"], subscription["id"])
    invoice = _new_invoice(
        fake,
        subscription,
        reason="upcoming",
        period=(start, end),
        lines=lines,
        invoice_id=new_id("upcoming_in_", 24),
    )
    invoice["auto_advance"] = False
    invoice["automatically_finalizes_at"] = end
    return invoice


def send_upcoming(fake, subscription_id):
    subscription = fake.get("subscription", subscription_id)
    return fake.emit("invoice.upcoming", preview(fake, subscription))


def create_preview(fake, context, params):
    subscription_id = params.get("subscription")
    if subscription_id is None:
        raise FakeStripeError(
            "The fake Stripe previews subscription invoices only: pass subscription.",
            param="subscription",
        )
    subscription = fake.get("subscription", subscription_id, param="subscription")
    if "customer" in params and params["customer"] != subscription["customer"]:
        raise invalid(
            f"Subscription {subscription_id} does not belong to customer "
            f"{params['customer']}.",
            "customer",
        )
    if subscription["status"] == "canceled":
        raise invalid(
            f"No upcoming invoices for canceled subscription {subscription_id}.",
            "subscription",
            code="invoice_upcoming_none",
        )
    return preview(fake, subscription)


def retrieve_invoice(fake, context, params, id):
    return fake.get("invoice", id)


def list_invoice_lines(fake, context, params, id):
    lines = fake.get("invoice", id)["lines"]["data"]
    # paginate() lists newest first; Stripe lists lines in invoice order.
    return paginate(list(reversed(lines)), params, f"/v1/invoices/{id}/lines")


def list_invoices(fake, context, params):
    invoices = list(fake.store["invoice"].values())
    for name in ("customer", "subscription", "status", "collection_method"):
        if name in params:
            invoices = [i for i in invoices if i.get(name) == params[name]]
    return paginate(invoices, params, "/v1/invoices")


def pay_invoice(fake, context, params, id):
    invoice = fake.get("invoice", id)
    if invoice["status"] != "open":
        raise invalid(
            f"Invoice is already {invoice['status']}.", code="invoice_not_open"
        )
    if params.get("paid_out_of_band"):
        _attempt_payment(fake, invoice, context, fail=False)
    else:
        fail = _take_payment_failure(fake, invoice["customer"])
        _attempt_payment(fake, invoice, context, fail=fail)
        if fail:
            raise FakeStripeError(
                "Your card was declined.",
                status=402,
                type="card_error",
                code="card_declined",
                stored=True,
            )
    return invoice
