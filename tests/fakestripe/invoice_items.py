"""Invoice items: one-off charges such as success fees, billed on the next invoice."""

from .catalog import merge_metadata
from .listing import paginate
from .objects import build
from .tiers import amount_for_quantity
from .wire import FakeStripeError, invalid


def create_invoice_item(fake, context, params):
    customer_id = params["customer"]
    fake.get("customer", customer_id, param="customer")
    subscription_id = params.get("subscription")
    if subscription_id:
        subscription = fake.get("subscription", subscription_id, param="subscription")
        if subscription["customer"] != customer_id:
            raise invalid(
                f"Subscription {subscription_id} belongs to another customer.",
                "subscription",
            )
    amount, currency, price, quantity = _invoice_item_amount(fake, params)
    now = fake.now
    period = params.get("period", {"start": now, "end": now})
    invoice_item = build(
        "invoiceitem",
        id=fake.next_id("invoiceitem"),
        amount=amount,
        currency=currency,
        customer=customer_id,
        date=now,
        description=params.get("description"),
        discountable=params.get("discountable", True),
        discounts=[],
        invoice=None,
        livemode=False,
        metadata=merge_metadata({}, params.get("metadata", {})),
        net_amount=amount,
        period=period,
        proration=False,
        quantity=quantity,
        quantity_decimal=str(quantity),
        tax_rates=[],
        parent=(
            {
                "type": "subscription_details",
                "subscription_details": {"subscription": subscription_id},
            }
            if subscription_id
            else None
        ),
        pricing={
            "type": "price_details",
            "price_details": {
                "price": price["id"] if price else None,
                "product": price["product"] if price else None,
            },
            "unit_amount_decimal": (
                price["unit_amount_decimal"]
                if price
                else str(params.get("unit_amount_decimal", amount))
            ),
        },
    )
    fake.put("invoiceitem", invoice_item)
    fake.emit("invoiceitem.created", invoice_item, context=context)
    return invoice_item


def _invoice_item_amount(fake, params):
    quantity = params.get("quantity", 1)
    price_id = (params.get("pricing") or {}).get("price")
    if price_id:
        if "amount" in params or "unit_amount_decimal" in params:
            raise invalid(
                "You may only specify one of these parameters: amount, pricing[price], "
                "unit_amount_decimal.",
                "amount",
            )
        price = fake.get("price", price_id, param="pricing[price]")
        return amount_for_quantity(price, quantity), price["currency"], price, quantity
    if "currency" not in params:
        raise FakeStripeError(
            "Missing required param: currency.",
            code="parameter_missing",
            param="currency",
        )
    if "amount" in params:
        if "unit_amount_decimal" in params:
            raise invalid(
                "You may only specify one of these parameters: amount, unit_amount_decimal.",
                "amount",
            )
        return params["amount"], params["currency"], None, quantity
    if "unit_amount_decimal" in params:
        unit = {"unit_amount_decimal": params["unit_amount_decimal"]}
        return amount_for_quantity(unit, quantity), params["currency"], None, quantity
    raise FakeStripeError(
        "Missing required param: amount.", code="parameter_missing", param="amount"
    )


def retrieve_invoice_item(fake, context, params, id):
    return fake.get("invoiceitem", id, label="invoiceitem")


def update_invoice_item(fake, context, params, id):
    invoice_item = fake.get("invoiceitem", id, label="invoiceitem")
    if invoice_item["invoice"]:
        raise invalid(
            f"Invoice item {id} is already on invoice {invoice_item['invoice']} and "
            "can no longer be changed."
        )
    for name in ("amount", "description", "period", "discountable"):
        if name in params:
            invoice_item[name] = params[name]
    if "amount" in params:
        invoice_item["net_amount"] = params["amount"]
    if "metadata" in params:
        invoice_item["metadata"] = merge_metadata(
            invoice_item["metadata"], params["metadata"]
        )
    return invoice_item


def delete_invoice_item(fake, context, params, id):
    invoice_item = fake.get("invoiceitem", id, label="invoiceitem")
    if invoice_item["invoice"]:
        raise invalid(f"Invoice item {id} is already invoiced and cannot be deleted.")
    del fake.store["invoiceitem"][id]
    return {"id": id, "object": "invoiceitem", "deleted": True}


def list_invoice_items(fake, context, params):
    items = list(fake.store["invoiceitem"].values())
    if "customer" in params:
        items = [i for i in items if i["customer"] == params["customer"]]
    if "invoice" in params:
        items = [i for i in items if i["invoice"] == params["invoice"]]
    if "pending" in params:
        items = [i for i in items if (i["invoice"] is None) == params["pending"]]
    return paginate(items, params, "/v1/invoiceitems")
