"""Number formats of the portal's pages."""

from decimal import Decimal

from django import template

register = template.Library()


@register.filter
def unit_price(value: Decimal) -> str:
    """Format a unit price with two decimals, or more when it has them: 0.0045 stays."""
    if value is None:
        return ""
    text = format(Decimal(value).normalize(), "f")
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.ljust(2, '0')}"
