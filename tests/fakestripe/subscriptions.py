"""Subscriptions and subscription items.

Since API version 2025-03-31 the billing period is a field of each
subscription item (``current_period_start``, ``current_period_end``). The
fake keeps one monthly cycle per subscription and copies it onto every item.
"""

import copy

from . import invoicing, proration
from .catalog import merge_metadata
from .listing import paginate, search
from .objects import add_months, build, deleted
from .prices import render_price
from .wire import FakeStripeError, invalid, unsupported


def period(fake, subscription_id):
    """Return the subscription's current (start, end) in unix seconds."""
    cycle = fake.subscription_cycles[subscription_id]
    end = add_months(cycle["anchor"], cycle["index"])
    if cycle["index"] == 0:
        return cycle["start"], end
    return add_months(cycle["anchor"], cycle["index"] - 1), end


def items_of(fake, subscription_id):
    return [
        item
        for item in fake.store["subscription_item"].values()
        if item["subscription"] == subscription_id
    ]


def refresh(fake, subscription):
    """Copy the items and the current period into the stored subscription."""
    start, end = period(fake, subscription["id"])
    items = items_of(fake, subscription["id"])
    for item in items:
        item["current_period_start"] = start
        item["current_period_end"] = end
    subscription["items"] = {
        "object": "list",
        "data": copy.deepcopy(items),
        "has_more": False,
        "total_count": len(items),
        "url": f"/v1/subscription_items?subscription={subscription['id']}",
    }
    return subscription


def render(fake, subscription, expand):
    result = copy.deepcopy(subscription)
    if "latest_invoice" in expand and result.get("latest_invoice"):
        result["latest_invoice"] = copy.deepcopy(
            fake.store["invoice"][result["latest_invoice"]]
        )
    return result


# Subscriptions.


def create_subscription(fake, context, params):
    customer_id = params["customer"]
    fake.get("customer", customer_id, param="customer")
    raw_items = params.get("items") or []
    if not raw_items:
        raise FakeStripeError(
            "Missing required param: items.", code="parameter_missing", param="items"
        )
    for index, raw in enumerate(raw_items):
        _check_item_keys(raw, f"items[{index}]")
    prices = [
        _item_price(fake, raw, f"items[{index}]") for index, raw in enumerate(raw_items)
    ]
    _check_same_cycle(prices)

    start = params.get("backdate_start_date", fake.now)
    anchor = params.get("billing_cycle_anchor", start)
    subscription_id = fake.next_id("subscription")
    fake.subscription_cycles[subscription_id] = _first_cycle(fake, start, anchor)
    subscription = build(
        "subscription",
        id=subscription_id,
        billing_cycle_anchor=anchor,
        created=fake.now,
        start_date=start,
        currency=prices[0]["currency"],
        customer=customer_id,
        collection_method=params.get("collection_method", "charge_automatically"),
        days_until_due=params.get("days_until_due"),
        description=params.get("description"),
        metadata=merge_metadata({}, params.get("metadata", {})),
        cancel_at_period_end=params.get("cancel_at_period_end", False),
        latest_invoice=None,
        status="active",
    )
    fake.put("subscription", subscription)

    for raw, price in zip(raw_items, prices, strict=True):
        _new_item(fake, subscription_id, price, raw)
    refresh(fake, subscription)
    collect = params.get("payment_behavior") != "default_incomplete"
    invoice = invoicing.start_invoice(fake, subscription, collect=collect)
    fake.emit("customer.subscription.created", subscription, context=context)
    invoicing.issue_start_invoice(fake, invoice, context, collect=collect)
    return render(fake, subscription, context.expand)


def _first_cycle(fake, start, anchor):
    if anchor > fake.now:
        return {"anchor": anchor, "index": 0, "start": start}
    index = 1
    while add_months(anchor, index) <= fake.now:
        index += 1
    return {"anchor": anchor, "index": index, "start": start}


def _item_price(fake, raw, param):
    price_param = _join(param, "price")
    if "price" not in raw:
        raise FakeStripeError(
            f"Missing required param: {price_param}.",
            code="parameter_missing",
            param=price_param,
        )
    price = fake.get("price", raw["price"], param=price_param)
    if price["recurring"] is None:
        raise invalid(
            f"The price specified ({price['id']}) is set to `type=one_time` but "
            "subscription items only accept prices with `type=recurring`.",
            price_param,
        )
    if not price["active"]:
        raise invalid(f"The price specified ({price['id']}) is inactive.", price_param)
    if price["recurring"]["usage_type"] == "metered" and "quantity" in raw:
        raise invalid(
            "Quantity should not be specified where usage_type is `metered`. "
            f"Remove quantity from `{param or 'the request'}`.",
            _join(param, "quantity"),
        )
    return price


def _join(param, name):
    return f"{param}[{name}]" if param else name


def _check_same_cycle(prices):
    seen = set()
    for price in prices:
        if price["id"] in seen:
            raise invalid(
                "Cannot add multiple subscription items with the same price.", "items"
            )
        seen.add(price["id"])
    cycles = {
        (p["currency"], p["recurring"]["interval"], p["recurring"]["interval_count"])
        for p in prices
    }
    if len(cycles) > 1:
        raise invalid(
            "All prices on a subscription must have the same currency and "
            "billing interval.",
            "items",
        )


def _new_item(fake, subscription_id, price, raw):
    metered = price["recurring"]["usage_type"] == "metered"
    item = build(
        "subscription_item",
        id=fake.next_id("subscription_item"),
        created=fake.now,
        discounts=[],
        metadata=merge_metadata({}, raw.get("metadata", {})),
        price=render_price(price, []),
        plan=None,
        subscription=subscription_id,
        tax_rates=[],
        billing_thresholds=None,
    )
    if metered:
        item.pop("quantity", None)
    else:
        item["quantity"] = raw.get("quantity", 1)
    return fake.put("subscription_item", item)


def retrieve_subscription(fake, context, params, id):
    return render(fake, fake.get("subscription", id), context.expand)


def update_subscription(fake, context, params, id):
    subscription = fake.get("subscription", id)
    if subscription["status"] == "canceled":
        raise invalid(
            "A canceled subscription can only update its cancellation_details "
            "and metadata.",
        )
    before = copy.deepcopy(subscription)
    changes = []
    for index, raw in enumerate(params.get("items", [])):
        changes.append(_change_item(fake, subscription, raw, f"items[{index}]"))
    for name in (
        "cancel_at_period_end",
        "description",
        "collection_method",
        "days_until_due",
    ):
        if name in params:
            subscription[name] = params[name]
    if "metadata" in params:
        subscription["metadata"] = merge_metadata(
            subscription["metadata"], params["metadata"]
        )
    refresh(fake, subscription)
    _emit_updated(fake, subscription, before, context)
    proration.apply(fake, subscription, changes, params, context)
    return render(fake, subscription, context.expand)


def _change_item(fake, subscription, raw, param):
    """Apply one ``items[]`` entry and return (item id, old charge, new charge)."""
    _check_item_keys(raw, param)
    if "id" not in raw:
        price = _item_price(fake, raw, param)
        _check_same_cycle(
            [item["price"] for item in items_of(fake, subscription["id"])] + [price]
        )
        item = _new_item(fake, subscription["id"], price, raw)
        return item["id"], None, proration.charge(fake, item)
    item = fake.store["subscription_item"].get(raw["id"])
    if item is None or item["subscription"] != subscription["id"]:
        raise FakeStripeError(
            f"No such subscription item: '{raw['id']}'",
            status=404,
            code="resource_missing",
            param=f"{param}[id]",
        )
    old = proration.charge(fake, item)
    if raw.get("deleted"):
        _remove_item(fake, item)
        return item["id"], old, None
    _update_item_fields(fake, item, raw, param)
    return item["id"], old, proration.charge(fake, item)


def _check_item_keys(raw, param):
    for name in raw:
        if name not in _ITEM_KEYS:
            raise unsupported(f"{param}[{name}]", "subscription items")


_ITEM_KEYS = frozenset({"id", "price", "quantity", "metadata", "deleted"})


def _update_item_fields(fake, item, raw, param):
    if "price" in raw:
        price = _item_price(fake, raw, param)
        item["price"] = render_price(price, [])
        if price["recurring"]["usage_type"] == "metered":
            item.pop("quantity", None)
        else:
            item.setdefault("quantity", 1)
    if "quantity" in raw:
        if item["price"]["recurring"]["usage_type"] == "metered":
            raise invalid(
                "Quantity should not be specified where usage_type is `metered`.",
                _join(param, "quantity"),
            )
        item["quantity"] = raw["quantity"]
    if "metadata" in raw:
        item["metadata"] = merge_metadata(item["metadata"], raw["metadata"])


def _remove_item(fake, item):
    if len(items_of(fake, item["subscription"])) == 1:
        raise invalid(
            "A subscription must keep at least one item; cancel the subscription instead.",
            "items",
        )
    del fake.store["subscription_item"][item["id"]]


def _emit_updated(fake, subscription, before, context):
    previous = {
        key: before.get(key)
        for key in subscription
        if key in before and before[key] != subscription[key]
    }
    fake.emit(
        "customer.subscription.updated",
        subscription,
        context=context,
        previous=previous,
    )


def cancel_subscription(fake, context, params, id):
    subscription = fake.get("subscription", id)
    if subscription["status"] == "canceled":
        raise invalid(f"Subscription {id} is already canceled.")
    if params.get("invoice_now"):
        invoicing.invoice_usage_to_now(fake, subscription, context)
    details = params.get("cancellation_details") or {}
    end_subscription(fake, subscription, context, details)
    return render(fake, subscription, context.expand)


def end_subscription(fake, subscription, context, details=None):
    details = details or {}
    subscription.update(
        status="canceled",
        canceled_at=fake.now,
        ended_at=fake.now,
        cancellation_details={
            "comment": details.get("comment"),
            "feedback": details.get("feedback"),
            "reason": "cancellation_requested",
        },
    )
    refresh(fake, subscription)
    fake.emit("customer.subscription.deleted", subscription, context=context)


def list_subscriptions(fake, context, params):
    subscriptions = list(fake.store["subscription"].values())
    status = params.get("status")
    if status is None:
        subscriptions = [s for s in subscriptions if s["status"] != "canceled"]
    elif status != "all":
        subscriptions = [s for s in subscriptions if s["status"] == status]
    if "customer" in params:
        subscriptions = [
            s for s in subscriptions if s["customer"] == params["customer"]
        ]
    if "price" in params:
        subscriptions = [
            s
            for s in subscriptions
            if any(i["price"]["id"] == params["price"] for i in s["items"]["data"])
        ]
    return paginate(subscriptions, params, "/v1/subscriptions")


def search_subscriptions(fake, context, params):
    subscriptions = list(fake.store["subscription"].values())
    return search(subscriptions, params, "/v1/subscriptions/search")


# Subscription items.


def create_item(fake, context, params):
    subscription = fake.get(
        "subscription", params["subscription"], param="subscription"
    )
    before = copy.deepcopy(subscription)
    price = _item_price(fake, params, "")
    current = [item["price"] for item in items_of(fake, subscription["id"])]
    _check_same_cycle(current + [price])
    item = _new_item(fake, subscription["id"], price, params)
    refresh(fake, subscription)
    _emit_updated(fake, subscription, before, context)
    changes = [(item["id"], None, proration.charge(fake, item))]
    proration.apply(fake, subscription, changes, params, context)
    return item


def retrieve_item(fake, context, params, id):
    return fake.get("subscription_item", id, label="subscription item")


def update_item(fake, context, params, id):
    item = fake.get("subscription_item", id, label="subscription item")
    subscription = fake.store["subscription"][item["subscription"]]
    before = copy.deepcopy(subscription)
    old = proration.charge(fake, item)
    _update_item_fields(fake, item, params, "")
    refresh(fake, subscription)
    _emit_updated(fake, subscription, before, context)
    changes = [(item["id"], old, proration.charge(fake, item))]
    proration.apply(fake, subscription, changes, params, context)
    return item


def delete_item(fake, context, params, id):
    item = fake.get("subscription_item", id, label="subscription item")
    subscription = fake.store["subscription"][item["subscription"]]
    before = copy.deepcopy(subscription)
    old = proration.charge(fake, item)
    _remove_item(fake, item)
    refresh(fake, subscription)
    _emit_updated(fake, subscription, before, context)
    proration.apply(fake, subscription, [(id, old, None)], params, context)
    return deleted("subscription_item", id)


def list_items(fake, context, params):
    fake.get("subscription", params["subscription"], param="subscription")
    items = items_of(fake, params["subscription"])
    return paginate(items, params, "/v1/subscription_items")
