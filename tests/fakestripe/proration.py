"""Prorations for mid-period changes to licensed (flat) subscription items.

A change credits the unused part of the period at the old price and charges
the rest of the period at the new one, each as a pending invoice item with
``proration: true``. The fraction is counted in seconds, as Stripe prorates,
and each amount is rounded half up to a whole cent. Metered items are billed
from usage and never prorated. ``proration_behavior=none`` skips this;
``always_invoice`` bills the prorations at once on a ``subscription_update``
invoice.
"""

from decimal import ROUND_HALF_UP, Decimal

from .objects import build
from .tiers import amount_for_quantity


def charge(fake, item):
    """Return (price, quantity) for a licensed item, or None for a metered one."""
    price = fake.store["price"][item["price"]["id"]]
    if price["recurring"]["usage_type"] == "metered":
        return None
    return price, item.get("quantity", 1)


def apply(fake, subscription, changes, params, context):
    """Create the proration invoice items for ``changes`` (item id, old, new)."""
    from .invoicing import invoice_pending_now
    from .subscriptions import period

    behavior = params.get("proration_behavior", "create_prorations")
    if behavior == "none":
        return []
    start, end = period(fake, subscription["id"])
    when = params.get("proration_date", fake.now)
    if not start <= when < end:
        return []
    fraction = Decimal(end - when) / Decimal(end - start)
    created = []
    for item_id, old, new in changes:
        if old == new:
            continue
        if old is not None:
            created.append(
                _proration_item(
                    fake,
                    subscription,
                    item_id,
                    old,
                    -fraction,
                    (when, end),
                    "Unused time on",
                )
            )
        if new is not None:
            created.append(
                _proration_item(
                    fake,
                    subscription,
                    item_id,
                    new,
                    fraction,
                    (when, end),
                    "Remaining time on",
                )
            )
    for invoice_item in created:
        fake.emit("invoiceitem.created", invoice_item, context=context)
    if behavior == "always_invoice" and created:
        invoice_pending_now(fake, subscription, context)
    return created


def _proration_item(fake, subscription, item_id, charged, fraction, bounds, label):
    price, quantity = charged
    full = Decimal(amount_for_quantity(price, quantity))
    amount = int((full * fraction).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    product = fake.store["product"].get(price["product"], {})
    invoice_item = build(
        "invoiceitem",
        id=fake.next_id("invoiceitem"),
        amount=amount,
        currency=price["currency"],
        customer=subscription["customer"],
        date=fake.now,
        description=f"{label} {quantity} × {product.get('name', price['product'])}",
        discountable=False,
        discounts=[],
        invoice=None,
        livemode=False,
        metadata={},
        net_amount=amount,
        period={"start": bounds[0], "end": bounds[1]},
        proration=True,
        quantity=quantity,
        quantity_decimal=str(quantity),
        tax_rates=[],
        parent={
            "type": "subscription_details",
            "subscription_details": {
                "subscription": subscription["id"],
                "subscription_item": item_id,
            },
        },
        pricing={
            "type": "price_details",
            "price_details": {"price": price["id"], "product": price["product"]},
            "unit_amount_decimal": price.get("unit_amount_decimal"),
        },
    )
    return fake.put("invoiceitem", invoice_item)
