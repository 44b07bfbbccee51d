"""Price one API response's usage for a model at a moment in time."""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from . import bundled, overrides, published, rates
from .usage import TokenUsage

logger = logging.getLogger(__name__)

PRICED = "priced"
UNPRICED = "unpriced"
SOURCE_OVERRIDE = "override"
SOURCE_GENAI_PRICES = "genai-prices"
SOURCE_PUBLISHED = "published"

# Bedrock ids look like "anthropic.claude-sonnet-4-5-20250929-v1:0", with an
# optional cross-region prefix ("us.", "eu.", "apac.", "global.").
_BEDROCK_PREFIX = re.compile(r"^(?:[a-z-]+\.)?anthropic\.")
_BEDROCK_VERSION = re.compile(r"-v\d+(?::[0-9a-z]+)*$")
# Vertex AI ids look like "claude-sonnet-4-5@20250929".
_VERTEX_VERSION = re.compile(r"@[^@]*$")
_DATE_SUFFIX = re.compile(r"-\d{8}$")

_warned_unpriced: set[str] = set()
_warned_lock = threading.Lock()


@dataclass(frozen=True)
class PriceQuote:
    """The cost of one usage, or why it has none.

    `cost_usd` is None when no price is known, never 0, and then
    `resolved_model`, `source` and `version` are empty strings. `breakdown`
    maps each kind of `rates.KINDS` to its cost. `rates` maps each kind to
    the rate applied, per million tokens or per thousand web searches, after
    any long-context band, batch discount or US-only surcharge.
    """

    model: str
    resolved_model: str
    status: str
    cost_usd: Decimal | None
    breakdown: dict[str, Decimal] = field(default_factory=dict)
    rates: dict[str, Decimal] = field(default_factory=dict)
    source: str = ""
    version: str = ""
    estimated: bool = False
    band: str | None = None

    @property
    def priced(self) -> bool:
        return self.status == PRICED


@functools.lru_cache(maxsize=4096)
def family_id(model: str) -> str:
    """Return the model family of a dated, Bedrock or Vertex AI model id.

    For example "claude-haiku-4-5-20251001",
    "us.anthropic.claude-haiku-4-5-20251001-v1:0" and
    "claude-haiku-4-5@20251001" all become "claude-haiku-4-5".
    """
    family = model.strip().lower()
    if _BEDROCK_PREFIX.match(family):
        family = _BEDROCK_PREFIX.sub("", family)
        family = _BEDROCK_VERSION.sub("", family)
    family = _VERTEX_VERSION.sub("", family)
    return _DATE_SUFFIX.sub("", family)


def price_usage(model: str, usage: TokenUsage, at: datetime) -> PriceQuote:
    """Price `usage` of `model` with the rates valid at `at`.

    Rates come from the first of: a ModelPrice row for the exact model id, a
    ModelPrice row for its family id, Anthropic's published rates that the
    bundled table lacks (agents.pricing.published), genai-prices' table for
    the exact id, then for the family id. A model found in none of them gets an
    "unpriced" quote with a cost of None, and a warning is logged once per
    model and process.

    Raise ValueError when `at` has no time zone.
    """
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"at must be timezone-aware, got {at.isoformat()}.")
    snapshot = overrides.current_snapshot()
    key = (model, usage.speed)
    resolution = _resolutions.get(key)
    if resolution is None or not resolution.holds(snapshot, at):
        resolution = _resolve(model, usage.speed, at, snapshot)
        if resolution.snapshot is not None:
            if len(_resolutions) >= MAX_RESOLUTIONS:
                _resolutions.clear()
            _resolutions[key] = resolution
    if resolution.card is None:
        _warn_unpriced(
            model, "no ModelPrice row in force at that time and no genai-prices entry"
        )
        return _unpriced(model, usage)
    return _quote(
        model,
        usage,
        resolution.card,
        resolution.resolved_model,
        resolution.source,
        resolution.version,
        rates_estimated=resolution.rates_estimated,
    )


@dataclass(frozen=True)
class _Resolution:
    """The rates that price a model, and the span of time over which they apply.

    `card` is None for a model with no price. `snapshot` is the override
    rows the choice was made from, None when the choice may change at any
    moment (a price by time of day) and so is not kept. The choice applies
    from `start` (inclusive) to `end` (exclusive), None meaning unbounded:
    between two moments at which an override row or a dated genai-prices
    price starts, the same rates apply.
    """

    card: rates.RateCard | None
    resolved_model: str = ""
    source: str = ""
    version: str = ""
    rates_estimated: bool = False
    snapshot: object = None
    start: datetime | None = None
    end: datetime | None = None

    def holds(self, snapshot: object, at: datetime) -> bool:
        return (
            self.snapshot is snapshot
            and (self.start is None or self.start <= at)
            and (self.end is None or at < self.end)
        )


# (model id, speed) -> the last resolution made for it in this process.
# Finding the rates takes longer than pricing with them, and the recorder
# prices every API response.
_resolutions: dict[tuple[str, str], _Resolution] = {}
MAX_RESOLUTIONS = 4096


def _resolve(model: str, speed: str, at: datetime, snapshot: object) -> _Resolution:
    """Find the rates of `model` at `at`, as price_usage() describes."""
    family = family_id(model)
    candidates = (model,) if family == model else (model, family)
    changes = [
        moment
        for candidate in candidates
        for moment in overrides.valid_from_times(candidate, snapshot)
    ]
    fast = speed == "fast"

    for candidate in candidates:
        override = overrides.find_override(candidate, at)
        if override is not None:
            # An override has no fast-mode rates.
            found = _Resolution(
                override.card,
                candidate,
                SOURCE_OVERRIDE,
                override.version,
                rates_estimated=fast,
            )
            return _bounded(found, snapshot, at, changes)

    for candidate in candidates:
        found = published.find_published(candidate)
        if found is not None:
            resolution = _Resolution(
                found[1],
                found[0],
                SOURCE_PUBLISHED,
                published.PUBLISHED_VERSION,
                rates_estimated=fast,
            )
            return _bounded(resolution, snapshot, at, changes)

    for candidate in candidates:
        info = bundled.find_model(candidate)
        if info is not None:
            resolution = _Resolution(
                bundled.rate_card(info, at, speed=speed),
                info.id,
                SOURCE_GENAI_PRICES,
                bundled.GENAI_PRICES_VERSION,
                rates_estimated=fast and not bundled.has_fast_rates(info),
            )
            price_changes = bundled.price_change_times(info)
            if price_changes is None:
                return resolution
            return _bounded(resolution, snapshot, at, changes + price_changes)

    return _bounded(_Resolution(None), snapshot, at, changes)


def _bounded(
    resolution: _Resolution, snapshot: object, at: datetime, changes: list[datetime]
) -> _Resolution:
    return dataclasses.replace(
        resolution,
        snapshot=snapshot,
        start=max((moment for moment in changes if moment <= at), default=None),
        end=min((moment for moment in changes if moment > at), default=None),
    )


def _quote(
    model: str,
    usage: TokenUsage,
    card: rates.RateCard,
    resolved_model: str,
    source: str,
    version: str,
    *,
    rates_estimated: bool = False,
) -> PriceQuote:
    missing = rates.unpriced_kinds(card, usage)
    if missing:
        _warn_unpriced(model, f"{source} {resolved_model} has no rate for {missing}")
        return _unpriced(model, usage)
    priced = rates.price(card, usage)
    return PriceQuote(
        model=model,
        resolved_model=resolved_model,
        status=PRICED,
        cost_usd=priced.cost_usd,
        breakdown=priced.breakdown,
        rates=priced.rates,
        source=source,
        version=version,
        estimated=usage.split_estimated or rates_estimated,
        band=priced.band,
    )


def _unpriced(model: str, usage: TokenUsage) -> PriceQuote:
    return PriceQuote(
        model=model,
        resolved_model="",
        status=UNPRICED,
        cost_usd=None,
        estimated=usage.split_estimated,
    )


def _warn_unpriced(model: str, reason: str) -> None:
    if model in _warned_unpriced:
        return
    with _warned_lock:
        if model in _warned_unpriced:
            return
        _warned_unpriced.add(model)
    logger.warning(
        "Model %s: no price (%s). Its cost stays unknown until a ModelPrice row "
        "valid from that time or earlier is added. Then run manage.py reprice_usage.",
        model,
        reason,
    )
