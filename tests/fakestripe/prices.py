"""Prices: per-unit and tiered amounts, recurring and metered, with lookup keys."""

import re

from .catalog import create_product, merge_metadata
from .listing import paginate, search, strip_prefix
from .objects import build
from .wire import FakeStripeError, invalid

_CURRENCY = re.compile(r"^[a-z]{3}$")


def render_price(price, expand):
    """Copy a price for a response: Stripe sends ``tiers`` only when expanded."""
    result = dict(price)
    if "tiers" not in expand:
        result.pop("tiers", None)
    return result


def create_price(fake, context, params):
    return render_price(new_price(fake, params), context.expand)


def new_price(fake, params):
    _check_currency(params["currency"])
    product_id = _price_product(fake, params)
    recurring = _price_recurring(fake, params.get("recurring"))
    scheme = params.get("billing_scheme", "per_unit")
    tiers = _price_tiers(params, scheme)
    if scheme == "per_unit":
        unit_amount, unit_amount_decimal = _per_unit_amount(params)
    else:
        unit_amount, unit_amount_decimal = None, None
    lookup_key = params.get("lookup_key")
    if lookup_key:
        _claim_lookup_key(fake, lookup_key, params.get("transfer_lookup_key", False))
    price = build(
        "price",
        id=fake.next_id("price"),
        active=params.get("active", True),
        billing_scheme=scheme,
        created=fake.now,
        currency=params["currency"],
        lookup_key=lookup_key,
        metadata=merge_metadata({}, params.get("metadata", {})),
        nickname=params.get("nickname"),
        product=product_id,
        recurring=recurring,
        tax_behavior=params.get("tax_behavior", "unspecified"),
        tiers_mode=params.get("tiers_mode"),
        transform_quantity=params.get("transform_quantity"),
        type="recurring" if recurring else "one_time",
        unit_amount=unit_amount,
        unit_amount_decimal=unit_amount_decimal,
        custom_unit_amount=None,
    )
    if tiers is not None:
        price["tiers"] = tiers
    return fake.put("price", price)


def _check_currency(currency):
    if not _CURRENCY.match(currency):
        raise invalid(f"Invalid currency: {currency}.", "currency")


def _price_product(fake, params):
    if ("product" in params) == ("product_data" in params):
        raise invalid(
            "You must pass exactly one of product or product_data.", "product"
        )
    if "product" in params:
        fake.get("product", params["product"], param="product")
        return params["product"]
    data = params["product_data"]
    product = create_product(fake, None, {k: v for k, v in data.items() if k != "id"})
    if data.get("id"):
        fake.store["product"].pop(product["id"])
        product["id"] = data["id"]
        fake.put("product", product)
    return product["id"]


def _price_recurring(fake, recurring):
    if recurring is None:
        return None
    usage_type = recurring.get("usage_type", "licensed")
    meter_id = recurring.get("meter")
    if usage_type == "metered" and not meter_id:
        raise invalid(
            "A meter is required for a price with usage_type=metered: pass "
            "recurring[meter].",
            "recurring[meter]",
        )
    if meter_id:
        if usage_type != "metered":
            raise invalid(
                "recurring[meter] can only be set when usage_type is metered.",
                "recurring[meter]",
            )
        meter = fake.get("billing.meter", meter_id, param="recurring[meter]")
        if meter["status"] != "active":
            raise invalid(f"Meter {meter_id} is not active.", "recurring[meter]")
    return {
        "interval": recurring["interval"],
        "interval_count": recurring.get("interval_count", 1),
        "meter": meter_id,
        "usage_type": usage_type,
        "trial_period_days": recurring.get("trial_period_days"),
    }


def _per_unit_amount(params):
    if "tiers" in params or "tiers_mode" in params:
        raise invalid(
            "tiers and tiers_mode require billing_scheme=tiered.", "billing_scheme"
        )
    has_int = "unit_amount" in params
    has_decimal = "unit_amount_decimal" in params
    if has_int and has_decimal:
        raise invalid(
            "You may only specify one of these parameters: unit_amount, "
            "unit_amount_decimal.",
            "unit_amount",
        )
    if not (has_int or has_decimal or "custom_unit_amount" in params):
        raise FakeStripeError(
            "Missing required param: unit_amount.",
            code="parameter_missing",
            param="unit_amount",
        )
    if has_int:
        amount = params["unit_amount"]
        if amount < 0:
            raise invalid("Invalid unit_amount: must be at least 0.", "unit_amount")
        return amount, str(amount)
    if has_decimal:
        decimal = params["unit_amount_decimal"]
        if decimal < 0:
            raise invalid(
                "Invalid unit_amount_decimal: must be at least 0.",
                "unit_amount_decimal",
            )
        integral = int(decimal) if decimal == decimal.to_integral_value() else None
        return integral, format(decimal.normalize(), "f")
    return None, None


def _price_tiers(params, scheme):
    if scheme != "tiered":
        return None
    if "tiers" not in params:
        raise FakeStripeError(
            "Missing required param: tiers.", code="parameter_missing", param="tiers"
        )
    if "tiers_mode" not in params:
        raise FakeStripeError(
            "Missing required param: tiers_mode.",
            code="parameter_missing",
            param="tiers_mode",
        )
    if "unit_amount" in params or "unit_amount_decimal" in params:
        raise invalid(
            "unit_amount cannot be set when billing_scheme=tiered; put the "
            "amounts in tiers.",
            "unit_amount",
        )
    if "transform_quantity" in params:
        raise invalid("transform_quantity cannot be combined with tiers.", "tiers")
    return _checked_tiers(params["tiers"])


def _checked_tiers(raw_tiers):
    if not raw_tiers:
        raise invalid("tiers must contain at least one tier.", "tiers")
    tiers = []
    previous = 0
    for index, raw in enumerate(raw_tiers):
        param = f"tiers[{index}]"
        last = index == len(raw_tiers) - 1
        up_to = raw["up_to"]
        if last != (up_to == "inf"):
            raise invalid(
                "Only the last tier may have up_to=inf, and it must.", f"{param}[up_to]"
            )
        if up_to != "inf" and up_to <= previous:
            raise invalid(
                "Tiers must be ordered by ascending up_to.", f"{param}[up_to]"
            )
        for name in ("unit_amount", "flat_amount"):
            if name in raw and f"{name}_decimal" in raw:
                raise invalid(
                    f"You may only specify one of {name} and {name}_decimal.",
                    f"{param}[{name}]",
                )
        if not any(
            name in raw
            for name in (
                "unit_amount",
                "unit_amount_decimal",
                "flat_amount",
                "flat_amount_decimal",
            )
        ):
            raise invalid(
                "Each tier needs a unit_amount or flat_amount (or their _decimal forms).",
                param,
            )
        tiers.append(_tier_object(raw))
        previous = up_to if up_to != "inf" else previous
    return tiers


def _tier_object(raw):
    def decimal_text(name):
        if f"{name}_decimal" in raw:
            return format(raw[f"{name}_decimal"].normalize(), "f")
        if name in raw:
            return str(raw[name])
        return None

    unit_text = decimal_text("unit_amount")
    flat_text = decimal_text("flat_amount")
    return {
        "flat_amount": raw.get("flat_amount", _integral(flat_text)),
        "flat_amount_decimal": flat_text,
        "unit_amount": raw.get("unit_amount", _integral(unit_text)),
        "unit_amount_decimal": unit_text,
        "up_to": None if raw["up_to"] == "inf" else raw["up_to"],
    }


def _integral(text):
    if text is None or "." in text:
        return None
    return int(text)


def _claim_lookup_key(fake, lookup_key, transfer):
    for other in fake.store["price"].values():
        if other.get("lookup_key") != lookup_key:
            continue
        if not transfer:
            raise invalid(
                f"A price (`{other['id']}`) already uses that lookup key. Pass "
                "transfer_lookup_key=true to move it to this price.",
                "lookup_key",
            )
        other["lookup_key"] = None


def retrieve_price(fake, context, params, id):
    return render_price(fake.get("price", id), context.expand)


def update_price(fake, context, params, id):
    price = fake.get("price", id)
    for name in ("active", "nickname", "tax_behavior"):
        if name in params:
            price[name] = params[name]
    if "metadata" in params:
        price["metadata"] = merge_metadata(price["metadata"], params["metadata"])
    if "lookup_key" in params:
        if params["lookup_key"]:
            _claim_lookup_key(
                fake, params["lookup_key"], params.get("transfer_lookup_key", False)
            )
        price["lookup_key"] = params["lookup_key"] or None
    return render_price(price, context.expand)


def list_prices(fake, context, params):
    prices = list(fake.store["price"].values())
    for name in ("active", "product", "currency", "type"):
        if name in params:
            prices = [p for p in prices if p[name] == params[name]]
    if "lookup_keys" in params:
        prices = [p for p in prices if p.get("lookup_key") in params["lookup_keys"]]
    if "recurring" in params and "usage_type" in params["recurring"]:
        usage = params["recurring"]["usage_type"]
        prices = [
            p for p in prices if (p["recurring"] or {}).get("usage_type") == usage
        ]
    page = paginate(prices, params, "/v1/prices")
    expand = strip_prefix(context.expand, "data.")
    page["data"] = [render_price(p, expand) for p in page["data"]]
    return page


def search_prices(fake, context, params):
    result = search(list(fake.store["price"].values()), params, "/v1/prices/search")
    expand = strip_prefix(context.expand, "data.")
    result["data"] = [render_price(p, expand) for p in result["data"]]
    return result
