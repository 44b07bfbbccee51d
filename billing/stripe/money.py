"""Conversions between our Decimal amounts and Stripe's integer minor units."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

# Currencies Stripe counts in whole units (no cents), from Stripe's list of
# zero-decimal currencies (docs.stripe.com/currencies#zero-decimal).
ZERO_DECIMAL_CURRENCIES = frozenset(
    {
        "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga",
        "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf",
    }
)  # fmt: skip


def minor_unit_factor(currency: str) -> int:
    """Return how many minor units make one unit of `currency` (100 for usd)."""
    return 1 if currency.lower() in ZERO_DECIMAL_CURRENCIES else 100


def to_minor_units(amount: Decimal, currency: str) -> int:
    """Return `amount` in whole minor units, rounded half up (Decimal("49") -> 4900)."""
    scaled = amount * minor_unit_factor(currency)
    return int(scaled.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def to_minor_decimal(amount: Decimal, currency: str) -> str:
    """Return `amount` in minor units as a decimal string, for `unit_amount_decimal`.

    Stripe accepts at most 12 decimal places there: $0.005 becomes "0.5".
    """
    scaled = (amount * minor_unit_factor(currency)).quantize(Decimal("1e-12"))
    return plain_decimal(scaled)


def from_minor_units(amount: int, currency: str) -> Decimal:
    """Return a Stripe amount in minor units as a Decimal in the currency's units."""
    return Decimal(amount) / minor_unit_factor(currency)


def plain_decimal(value: Decimal) -> str:
    """Return `value` without exponent and without trailing zeros ("2.50" -> "2.5")."""
    text = format(value.normalize(), "f")
    return text if text != "-0" else "0"
