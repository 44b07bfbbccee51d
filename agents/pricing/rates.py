"""Rate cards and the arithmetic that turns token counts into a cost."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple

from .usage import TokenUsage

# Cost kinds, in the order they are reported. Token kinds are priced per
# million tokens, and web searches per thousand requests.
KINDS = (
    "input",
    "output",
    "cache_write_5m",
    "cache_write_1h",
    "cache_read",
    "web_search",
)
TOKEN_KINDS = KINDS[:-1]

# Anthropic bills server-side web search at the same rate for every model.
DEFAULT_WEB_SEARCH_PER_THOUSAND = Decimal(10)

# The Batch API bills every token at half the standard rate, and US-only
# inference (inference_geo "us") bills every token at 1.1 times the rate.
# Both multipliers apply to tokens only, not to web searches.
BATCH_MULTIPLIER = Decimal("0.5")
US_ONLY_MULTIPLIER = Decimal("1.1")

_MILLION = Decimal(1_000_000)
_THOUSAND = Decimal(1000)


@dataclass(frozen=True)
class Tier:
    """A long-context rate that applies when the prompt is above `start` tokens."""

    start: int
    rate: Decimal


@dataclass(frozen=True)
class RateCard:
    """Standard rates of one model, per kind, with optional long-context tiers.

    `base` maps each kind to its rate, or None where the source has no rate.
    `tiers` maps a kind to its tiers in ascending order of `start`. A tier
    applies to every token of the request, cache tokens included, when the
    prompt is strictly longer than `start`.
    """

    base: dict[str, Decimal | None]
    tiers: dict[str, tuple[Tier, ...]] = field(default_factory=dict)


class Priced(NamedTuple):
    """The cost of one usage under one rate card."""

    cost_usd: Decimal
    breakdown: dict[str, Decimal]
    rates: dict[str, Decimal]
    band: str | None


def unpriced_kinds(card: RateCard, usage: TokenUsage) -> list[str]:
    """Return the token kinds that `usage` has but `card` has no rate for."""
    counts = _counts(usage)
    return [
        kind for kind in TOKEN_KINDS if counts[kind] and card.base.get(kind) is None
    ]


def price(card: RateCard, usage: TokenUsage) -> Priced:
    """Price `usage` with `card`, exactly and in USD.

    A kind without a rate and without tokens costs 0. Callers check
    `unpriced_kinds` first, so a kind with tokens always has a rate here.
    """
    prompt_tokens = usage.prompt_tokens
    multiplier = token_multiplier(usage)
    if card.tiers:
        rates, band_start = _rates(card, multiplier, prompt_tokens)
    else:
        # Without tiers the rates depend on the card and the multiplier only.
        key = (id(card), multiplier)
        cached = _untiered_rates.get(key)
        if cached is None or cached[0] is not card:
            if len(_untiered_rates) >= 1024:
                _untiered_rates.clear()
            cached = (card, _rates(card, multiplier, prompt_tokens)[0])
            _untiered_rates[key] = cached
        rates, band_start = cached[1], None
    breakdown = {
        kind: count * rates[kind] / divisor
        for kind, count, divisor in zip(KINDS, usage.counts(), _DIVISORS, strict=True)
    }

    band = None
    if band_start is not None:
        band = f"long context: prompt of {prompt_tokens} tokens is over {band_start}"
    return Priced(
        cost_usd=sum(breakdown.values(), Decimal(0)),
        breakdown=breakdown,
        # A copy, so that no quote can change the rates of another.
        rates=dict(rates),
        band=band,
    )


# Token kinds are priced per million, web searches per thousand.
_DIVISORS = (*[_MILLION] * len(TOKEN_KINDS), _THOUSAND)

# (id of a card without tiers, multiplier) -> (that card, its rates). The
# card is kept so that its id cannot be reused by another object.
_untiered_rates: dict[tuple[int, Decimal], tuple[RateCard, dict[str, Decimal]]] = {}


def _rates(
    card: RateCard, multiplier: Decimal, prompt_tokens: int
) -> tuple[dict[str, Decimal], int | None]:
    """Return the rate of each kind for a prompt of `prompt_tokens`, and the band start."""
    rates: dict[str, Decimal] = {}
    band_start: int | None = None
    for kind in KINDS:
        rate = card.base.get(kind)
        for tier in reversed(card.tiers.get(kind, ())):
            if prompt_tokens > tier.start:
                rate = tier.rate
                band_start = max(band_start or 0, tier.start)
                break
        if kind == "web_search":
            rates[kind] = DEFAULT_WEB_SEARCH_PER_THOUSAND if rate is None else rate
        else:
            rates[kind] = (rate or Decimal(0)) * multiplier
    return rates, band_start


def token_multiplier(usage: TokenUsage) -> Decimal:
    """Return the factor that the service tier and inference region put on token rates."""
    multiplier = Decimal(1)
    if usage.service_tier.lower() == "batch":
        multiplier *= BATCH_MULTIPLIER
    if usage.inference_geo.lower() == "us":
        multiplier *= US_ONLY_MULTIPLIER
    return multiplier


def _counts(usage: TokenUsage) -> dict[str, int]:
    return {
        "input": usage.input_tokens,
        "output": usage.output_tokens,
        "cache_write_5m": usage.cache_write_5m_tokens,
        "cache_write_1h": usage.cache_write_1h_tokens,
        "cache_read": usage.cache_read_tokens,
        "web_search": usage.web_search_requests,
    }
