"""Staff price overrides (ModelPrice rows), cached in process memory.

Every process loads all rows at once and reloads them after
CACHE_TTL_SECONDS. Saving or deleting a row clears the cache of the process
that did it at once, and again when its transaction commits. Other processes
(Celery workers, other web workers) see the change within CACHE_TTL_SECONDS.
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models.signals import post_delete, post_save

from agents.models import ModelPrice

from .rates import RateCard, Tier

CACHE_TTL_SECONDS = 30

_LONG_CONTEXT_FIELDS = {
    "input": "long_context_input_per_mtok",
    "output": "long_context_output_per_mtok",
    "cache_write_5m": "long_context_cache_write_5m_per_mtok",
    "cache_write_1h": "long_context_cache_write_1h_per_mtok",
    "cache_read": "long_context_cache_read_per_mtok",
}


@dataclass(frozen=True)
class OverridePrice:
    """One ModelPrice row, converted to a rate card."""

    model: str
    valid_from: datetime
    card: RateCard
    version: str


@dataclass(frozen=True)
class _Snapshot:
    loaded_at: float
    # model id -> (valid_from of each row, rows), both ascending by valid_from
    by_model: dict[str, tuple[list[datetime], list[OverridePrice]]]


_lock = threading.Lock()
_snapshot: _Snapshot | None = None


def find_override(model: str, at: datetime) -> OverridePrice | None:
    """Return the row for exactly `model` that is valid at `at`, if any.

    The valid row is the one with the latest `valid_from` not after `at`.
    """
    entry = _current_snapshot().by_model.get(model)
    if entry is None:
        return None
    starts, rows = entry
    index = bisect.bisect_right(starts, at)
    return rows[index - 1] if index else None


def current_snapshot() -> object:
    """Return the loaded rows as an opaque token that changes when they reload."""
    return _current_snapshot()


def valid_from_times(model: str, snapshot: object) -> list[datetime]:
    """Return when each row of exactly `model` in `snapshot` starts, ascending."""
    entry = snapshot.by_model.get(model)
    return list(entry[0]) if entry else []


def clear_cache(**kwargs) -> None:
    """Drop the cached rows so that the next lookup reloads them.

    Accepts and ignores signal arguments, so it can be a signal receiver.
    """
    global _snapshot
    with _lock:
        _snapshot = None


def connect_signals() -> None:
    """Clear the cache whenever this process saves or deletes a ModelPrice."""
    post_save.connect(
        _on_model_price_change, sender=ModelPrice, dispatch_uid="pricing-overrides-save"
    )
    post_delete.connect(
        _on_model_price_change,
        sender=ModelPrice,
        dispatch_uid="pricing-overrides-delete",
    )


def _on_model_price_change(sender, using=None, **kwargs) -> None:
    clear_cache()
    # A lookup before the commit may reload the old rows from another
    # connection, so clear again once the new rows are visible to all.
    transaction.on_commit(clear_cache, using=using)


def _current_snapshot() -> _Snapshot:
    snapshot = _snapshot
    if (
        snapshot is not None
        and time.monotonic() - snapshot.loaded_at < CACHE_TTL_SECONDS
    ):
        return snapshot
    return _reload()


def _reload() -> _Snapshot:
    global _snapshot
    with _lock:
        current = _snapshot
        if (
            current is not None
            and time.monotonic() - current.loaded_at < CACHE_TTL_SECONDS
        ):
            # Another thread reloaded while this one waited for the lock.
            return current
        by_model: dict[str, tuple[list[datetime], list[OverridePrice]]] = {}
        for row in ModelPrice.objects.order_by("model", "valid_from"):
            starts, rows = by_model.setdefault(row.model, ([], []))
            starts.append(row.valid_from)
            rows.append(_to_override(row))
        _snapshot = _Snapshot(loaded_at=time.monotonic(), by_model=by_model)
        return _snapshot


def _to_override(row: ModelPrice) -> OverridePrice:
    base = {
        "input": row.input_per_mtok,
        "output": row.output_per_mtok,
        "cache_write_5m": row.cache_write_5m_per_mtok,
        "cache_write_1h": row.cache_write_1h_per_mtok,
        "cache_read": row.cache_read_per_mtok,
        "web_search": row.web_search_per_thousand,
    }
    tiers: dict[str, tuple[Tier, ...]] = {}
    if row.long_context_threshold_tokens is not None:
        # A long-context rate left empty keeps the standard rate for that kind.
        for kind, field_name in _LONG_CONTEXT_FIELDS.items():
            rate = getattr(row, field_name)
            if rate is not None:
                tiers[kind] = (
                    Tier(start=row.long_context_threshold_tokens, rate=rate),
                )
    return OverridePrice(
        model=row.model,
        valid_from=row.valid_from,
        card=RateCard(base=base, tiers=tiers),
        version=f"override#{row.pk}@{row.valid_from.isoformat()}",
    )
