"""Rates from the price table bundled with the genai-prices package.

Only the bundled table is used: nothing here starts genai-prices' background
updater, so pricing never fetches prices over the network.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, time
from decimal import Decimal
from importlib import metadata

import genai_prices
from genai_prices import data_snapshot
from genai_prices.types import ModelInfo, ModelPrice, StartDateConstraint, TieredPrices

from .rates import RateCard, Tier

logger = logging.getLogger(__name__)

GENAI_PRICES_VERSION = f"genai-prices {metadata.version('genai-prices')}"

# Our kind -> genai-prices ModelPrice attribute. Its cache_write_mtok is the
# 5-minute cache write rate.
_PRICE_ATTRIBUTES = {
    "input": "input_mtok",
    "output": "output_mtok",
    "cache_write_5m": "cache_write_mtok",
    "cache_write_1h": "cache_write_1h_mtok",
    "cache_read": "cache_read_mtok",
    "web_search": "web_searches_kcount",
}

_ID_SEPARATORS = re.compile(r"[^a-z0-9]+")

# Model id -> its genai-prices model, or None when the table has none.
_models: dict[str, ModelInfo | None] = {}
# id() of a genai-prices ModelPrice -> (that ModelPrice, its rate card). The
# ModelPrice is kept so that its id() cannot be reused by another object.
_cards: dict[int, tuple[ModelPrice, RateCard]] = {}


def find_model(model: str) -> ModelInfo | None:
    """Return the genai-prices model for `model`, or None when it has none.

    Results, misses included, are cached for the life of the process.
    """
    try:
        return _models[model]
    except KeyError:
        info = _lookup(model)
        _models[model] = info
        return info


def preload() -> None:
    """Load genai-prices' bundled table now instead of at the first lookup."""
    data_snapshot.get_snapshot()


def rate_card(info: ModelInfo, at: datetime, *, speed: str = "") -> RateCard:
    """Return the rates of `info` that are valid at `at`, at fast-mode rates for `speed` "fast"."""
    if speed == "fast":
        # genai-prices builds a new ModelPrice for a price variant on each
        # call, so these cards are not cached by object.
        return _to_rate_card(info.get_prices(at, {"speed": "fast"}))
    model_price = info.get_prices(at)
    cached = _cards.get(id(model_price))
    if cached is not None and cached[0] is model_price:
        return cached[1]
    card = _to_rate_card(model_price)
    _cards[id(model_price)] = (model_price, card)
    return card


def price_change_times(info: ModelInfo) -> list[datetime] | None:
    """Return the moments at which the rates of `info` change, or None when unknown.

    genai-prices dates a new price from UTC midnight of its start date. A
    price that depends on the time of day has no fixed change times.
    """
    constraints = []
    if not isinstance(info.prices, ModelPrice):
        constraints += [price.constraint for price in info.prices]
    constraints += [variant.constraint for variant in info.price_variants or ()]
    times = []
    for constraint in constraints:
        if constraint is None:
            continue
        if not isinstance(constraint, StartDateConstraint):
            return None
        times.append(datetime.combine(constraint.start_date, time(0), tzinfo=UTC))
    return times


def has_fast_rates(info: ModelInfo) -> bool:
    """Return whether genai-prices has fast-mode rates for `info`."""
    return any(
        variant.when.get("speed") == "fast" for variant in info.price_variants or ()
    )


def _lookup(model: str) -> ModelInfo | None:
    try:
        # Only the matched model is used. Costs are computed from its rates
        # elsewhere, because genai-prices counts input tokens differently.
        calculation = genai_prices.calc_price(
            genai_prices.Usage(), model, provider_id="anthropic"
        )
    except LookupError:
        return None
    info = calculation.model
    if not _is_same_model_line(model, info.id):
        # genai-prices matches ids by prefix, so "claude-opus-4-10" would
        # otherwise get the rates of "claude-opus-4-1".
        logger.info(
            "Model %s: ignoring the genai-prices match %s, which is another model",
            model,
            info.id,
        )
        return None
    return info


def _is_same_model_line(model: str, matched_id: str) -> bool:
    """Return whether one id's dash-separated parts start the other's."""
    model_parts = _ID_SEPARATORS.split(model.lower())
    matched_parts = _ID_SEPARATORS.split(matched_id.lower())
    shorter = min(len(model_parts), len(matched_parts))
    return model_parts[:shorter] == matched_parts[:shorter]


def _to_rate_card(model_price: ModelPrice) -> RateCard:
    base: dict[str, Decimal | None] = {}
    tiers: dict[str, tuple[Tier, ...]] = {}
    for kind, attribute in _PRICE_ATTRIBUTES.items():
        value = getattr(model_price, attribute, None)
        if isinstance(value, TieredPrices):
            base[kind] = value.base
            tiers[kind] = tuple(Tier(start=t.start, rate=t.price) for t in value.tiers)
        else:
            base[kind] = value
    return RateCard(base=base, tiers=tiers)
