"""The cost of the simulator's scripted usage, from Anthropic's published rates.

Tests compare recorded costs with these figures, which share no code with
the pricing engine, so a pricing fault cannot hide itself.
"""

from decimal import Decimal

MILLION = Decimal(1_000_000)

# USD per million tokens: input, 5m write, 1h write, cache read, output.
RATES = {
    "claude-sonnet-4-6": ("3", "3.75", "6", "0.30", "15"),
    "claude-sonnet-4-5-20250929": ("3", "3.75", "6", "0.30", "15"),
    "claude-haiku-4-5": ("1", "1.25", "2", "0.10", "5"),
    "claude-opus-4-7": ("5", "6.25", "10", "0.50", "25"),
}
# The simulator's usage keys, in the order of the rates above.
USAGE_KEYS = (
    "input_tokens",
    "ephemeral_5m_input_tokens",
    "ephemeral_1h_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
)


def expected_cost(model: str, turns) -> Decimal:
    """Return the exact cost of `turns` (scenario usage dicts) on `model`."""
    rates = [Decimal(rate) for rate in RATES[model]]
    total = Decimal(0)
    for turn in turns:
        total += sum(
            turn[key] * rate for key, rate in zip(USAGE_KEYS, rates, strict=True)
        )
    return total / MILLION
