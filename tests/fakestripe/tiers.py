"""Price amounts for a quantity: per unit, graduated tiers and volume tiers.

Amounts are in the currency's minor unit (cents for USD). Each tier's part
is rounded to a whole cent on its own, because Stripe puts each graduated
tier on its own invoice line. NOTE: rounding is half up here; Stripe's mode
for fractional cents was not checked.
"""

from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal


def _decimal(value):
    return Decimal(str(value)) if value is not None else Decimal(0)


def _cents(value):
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def unit_amount(entry):
    """Return a price's or tier's unit amount, preferring the decimal form."""
    if entry.get("unit_amount_decimal") is not None:
        return Decimal(str(entry["unit_amount_decimal"]))
    return _decimal(entry.get("unit_amount"))


def flat_amount(tier):
    if tier.get("flat_amount_decimal") is not None:
        return Decimal(str(tier["flat_amount_decimal"]))
    return _decimal(tier.get("flat_amount"))


def transformed_quantity(price, quantity):
    transform = price.get("transform_quantity")
    if not transform:
        return quantity
    rounding = ROUND_CEILING if transform.get("round") == "up" else ROUND_FLOOR
    divided = Decimal(quantity) / Decimal(transform["divide_by"])
    return divided.quantize(Decimal(1), rounding=rounding)


def amount_for_quantity(price, quantity):
    """Return the amount in minor units that ``price`` charges for ``quantity``."""
    quantity = Decimal(str(quantity))
    if price.get("billing_scheme") != "tiered":
        return _cents(unit_amount(price) * transformed_quantity(price, quantity))
    tiers = price.get("tiers") or []
    if price.get("tiers_mode") == "volume":
        return _volume_amount(tiers, quantity)
    return sum(amount for _, amount in graduated_parts(tiers, quantity))


def graduated_parts(tiers, quantity):
    """Split ``quantity`` over graduated tiers into (units, amount) pairs.

    A tier's flat amount is charged once when at least one unit falls in it.
    NOTE: whether Stripe also charges the first tier's flat amount at zero
    quantity is not checked here; this fake charges nothing for zero units.
    """
    parts = []
    lower = Decimal(0)
    for tier in tiers:
        upper = tier.get("up_to")
        upper = Decimal(upper) if upper is not None else None
        top = quantity if upper is None else min(quantity, upper)
        units = max(Decimal(0), top - lower)
        if units > 0:
            parts.append((units, _cents(units * unit_amount(tier) + flat_amount(tier))))
        if upper is None or quantity <= upper:
            break
        lower = upper
    return parts


def _volume_amount(tiers, quantity):
    for tier in tiers:
        upper = tier.get("up_to")
        if upper is None or quantity <= Decimal(upper):
            if quantity == 0:
                return 0
            return _cents(quantity * unit_amount(tier) + flat_amount(tier))
    return 0
