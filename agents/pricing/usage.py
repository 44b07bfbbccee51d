"""Token counts of one Messages API response, parsed from its usage object."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_COUNT_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "web_search_requests",
)


@dataclass(frozen=True)
class TokenUsage:
    """Billable counts of one API response, with cache writes split by lifetime.

    `input_tokens` is uncached input only, as the Messages API reports it:
    cache reads and cache writes are separate counts. `split_estimated` is
    True when some cache writes had no reported lifetime and were counted as
    5-minute writes.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0
    web_search_requests: int = 0
    service_tier: str = ""
    inference_geo: str = ""
    # "fast" for a request made in fast mode, which has rates of its own.
    speed: str = ""
    split_estimated: bool = False

    def __post_init__(self):
        # Plain ints in range pass on this first test. Anything else gets
        # the checks that name the field.
        for name, value in zip(_COUNT_FIELDS, self.counts(), strict=True):
            if type(value) is not int or not 0 <= value <= MAX_COUNT:
                _check_count(name, value)

    @classmethod
    def from_api(cls, usage: Mapping[str, Any]) -> TokenUsage:
        """Parse the `usage` object of a Messages API response.

        Missing keys and nulls count as 0. Cache writes that the
        `cache_creation` split does not cover are counted as 5-minute
        writes, the API's default cache lifetime, and the result is marked
        `split_estimated`. When the split adds up to more than
        `cache_creation_input_tokens`, the split is used as reported.

        Raise ValueError naming the field when a count is negative or not
        an integer, or when a nested object is not a JSON object.
        """
        if not isinstance(usage, Mapping):
            raise ValueError(
                f"Invalid usage: expected a JSON object, got {type(usage).__name__}."
            )
        cache_creation = _nested(usage, "cache_creation")
        server_tool_use = _nested(usage, "server_tool_use")

        written_total = _count(usage, "cache_creation_input_tokens")
        written_5m = _count(
            cache_creation, "ephemeral_5m_input_tokens", "cache_creation."
        )
        written_1h = _count(
            cache_creation, "ephemeral_1h_input_tokens", "cache_creation."
        )
        uncovered = written_total - written_5m - written_1h
        # A split that does not add up to a reported aggregate, either way,
        # makes the cost an estimate.
        has_aggregate = usage.get("cache_creation_input_tokens") is not None
        split_estimated = uncovered > 0 or (uncovered < 0 and has_aggregate)
        if uncovered > 0:
            written_5m += uncovered

        return cls(
            input_tokens=_count(usage, "input_tokens"),
            output_tokens=_count(usage, "output_tokens"),
            cache_write_5m_tokens=written_5m,
            cache_write_1h_tokens=written_1h,
            cache_read_tokens=_count(usage, "cache_read_input_tokens"),
            web_search_requests=_count(
                server_tool_use, "web_search_requests", "server_tool_use."
            ),
            service_tier=_text(usage, "service_tier").strip().lower(),
            inference_geo=_text(usage, "inference_geo").strip().lower(),
            speed=_text(usage, "speed").strip().lower(),
            split_estimated=split_estimated,
        )

    def counts(self) -> tuple[int, int, int, int, int, int]:
        """Return the six counts: input, output, 5-minute and 1-hour cache writes, cache reads, web searches."""
        return (
            self.input_tokens,
            self.output_tokens,
            self.cache_write_5m_tokens,
            self.cache_write_1h_tokens,
            self.cache_read_tokens,
            self.web_search_requests,
        )

    @property
    def cache_write_tokens(self) -> int:
        """Tokens written to the prompt cache, both lifetimes."""
        return self.cache_write_5m_tokens + self.cache_write_1h_tokens

    @property
    def prompt_tokens(self) -> int:
        """Length of the request's prompt: input, cache reads and cache writes."""
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens

    def with_output(self, output_tokens: int) -> TokenUsage:
        """Return a copy with `output_tokens` replaced."""
        return dataclasses.replace(self, output_tokens=output_tokens)


# No single response comes near this many tokens; a larger count is corrupt
# data, and would overflow the database's 64-bit totals.
MAX_COUNT = 10**12


def _check_count(name: str, value: object) -> None:
    # bool is a subclass of int, but `true` is never a token count.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"Invalid usage: {name} must be an integer, got {value!r}.")
    if value < 0:
        raise ValueError(f"Invalid usage: {name} must not be negative, got {value!r}.")
    if value > MAX_COUNT:
        raise ValueError(f"Invalid usage: {name} is implausibly large: {value!r}.")


def _nested(usage: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = usage.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"Invalid usage: {key} must be an object, got {value!r}.")
    return value


def _count(source: Mapping[str, Any], key: str, prefix: str = "") -> int:
    value = source.get(key)
    if value is None:
        return 0
    if type(value) is not int or not 0 <= value <= MAX_COUNT:
        _check_count(prefix + key, value)
    return value


def _text(usage: Mapping[str, Any], key: str) -> str:
    value = usage.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"Invalid usage: {key} must be a string, got {value!r}.")
    return value
