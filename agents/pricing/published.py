"""Anthropic's published rates for models the bundled genai-prices table lacks.

genai-prices 0.2.3 has no entry for the Mythos models and no long-context
band for Sonnet 4, which Anthropic bills above 200k prompt tokens (a prompt
that long needs the 1M-context beta). These rates are taken from
Anthropic's pricing page as read in December 2026. A staff ModelPrice row
still wins over them; genai-prices is consulted only after them.
"""

from __future__ import annotations

from decimal import Decimal

from .rates import RateCard, Tier

PUBLISHED_VERSION = "anthropic-pricing-page 2026-12"


def _card(input, write_5m, write_1h, read, output, *, band=None) -> RateCard:
    base = {
        "input": Decimal(input),
        "cache_write_5m": Decimal(write_5m),
        "cache_write_1h": Decimal(write_1h),
        "cache_read": Decimal(read),
        "output": Decimal(output),
        "web_search": Decimal(10),
    }
    tiers = {}
    if band is not None:
        start, rates = band
        tiers = {
            kind: (Tier(start=start, rate=Decimal(rate)),)
            for kind, rate in rates.items()
        }
    return RateCard(base=base, tiers=tiers)


# Sonnet 4 above 200k prompt tokens: input and cache rates double, output
# rises by half, the same band as Sonnet 4.5.
_SONNET_4_BAND = (
    200_000,
    {
        "input": "6",
        "cache_write_5m": "7.50",
        "cache_write_1h": "12",
        "cache_read": "0.60",
        "output": "22.50",
    },
)

# Family id -> rate card, in USD per million tokens.
PUBLISHED_RATES: dict[str, RateCard] = {
    "claude-mythos-5-1": _card("10", "12.50", "20", "0.25", "50"),
    "claude-mythos-5": _card("10", "12.50", "20", "1", "50"),
    "claude-sonnet-4": _card("3", "3.75", "6", "0.30", "15", band=_SONNET_4_BAND),
    "claude-sonnet-4-0": _card("3", "3.75", "6", "0.30", "15", band=_SONNET_4_BAND),
}


def find_published(model: str) -> tuple[str, RateCard] | None:
    """Return (id, rate card) for `model` from the published rates, or None."""
    card = PUBLISHED_RATES.get(model)
    return None if card is None else (model, card)
