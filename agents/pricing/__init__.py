"""Cost engine: prices Messages API usage in exact decimal USD."""

from .engine import PriceQuote, price_usage
from .usage import TokenUsage

__all__ = ["PriceQuote", "TokenUsage", "price_usage"]
