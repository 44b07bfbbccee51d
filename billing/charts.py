"""Bar charts drawn on the server as inline SVG.

The staff pages and the customer portal show charts that need no
JavaScript and no third-party asset. Pixel positions are computed with
Decimal like the amounts they stand for, and each bar carries a <title>
with its exact figure, which browsers show on hover and screen readers
read out.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

# Colours that stay apart for common colour blindness (Okabe and Ito's set).
PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#F0E442",
    "#000000",
)
OTHER_COLOUR = "#999999"
PIXEL = Decimal("0.1")
ZERO = Decimal(0)


def stacked_bars(
    labels: Sequence[str],
    series: dict[str, Sequence[Decimal]],
    *,
    title: str,
    unit: str = "USD",
    empty: str = "Nothing recorded in this period yet.",
    width: int = 720,
    height: int = 240,
) -> SafeString:
    """Return an SVG with one bar per label, stacked by series.

    `series` maps a legend name to one value per label, in label order.
    Negative values are drawn as zero. A chart with no label or only
    zeros shows `empty` instead of bars.
    """
    for name, values in series.items():
        if len(values) != len(labels):
            raise ValueError(
                f"Series {name!r} has {len(values)} values for {len(labels)} labels."
            )
    totals = [
        sum((max(values[index], ZERO) for values in series.values()), ZERO)
        for index in range(len(labels))
    ]
    top = max(totals, default=ZERO)
    if not labels or top <= 0:
        return _empty_chart(title, empty, width, height)

    plot_left, plot_top, plot_bottom = 64, 12, height - 56
    plot_height = Decimal(plot_bottom - plot_top)
    slot = Decimal(width - plot_left - 8) / len(labels)
    bar_width = max(slot * Decimal("0.8"), Decimal(1))
    colours = _colours(series)
    bars = []
    for index, label in enumerate(labels):
        x = plot_left + slot * index + (slot - bar_width) / 2
        base = Decimal(plot_bottom)
        for name, values in series.items():
            value = max(values[index], ZERO)
            if not value:
                continue
            bar_height = plot_height * value / top
            base -= bar_height
            bars.append(
                format_html(
                    '<rect x="{}" y="{}" width="{}" height="{}" fill="{}">'
                    "<title>{}: {} {} {}</title></rect>",
                    _px(x),
                    _px(base),
                    _px(bar_width),
                    _px(bar_height),
                    colours[name],
                    label,
                    name,
                    _amount(value),
                    unit,
                )
            )
    axis = format_html(
        '<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#666"/>'
        '<text x="{label_x}" y="{top_y}" text-anchor="end" font-size="11">{top}</text>'
        '<text x="{label_x}" y="{bottom}" text-anchor="end" font-size="11">0</text>'
        '<text x="{left}" y="{below}" font-size="11">{first}</text>'
        '<text x="{right}" y="{below}" text-anchor="end" font-size="11">{last}</text>',
        left=plot_left,
        right=width - 8,
        bottom=plot_bottom,
        label_x=plot_left - 6,
        top_y=plot_top + 10,
        top=f"{_amount(top)} {unit}",
        below=plot_bottom + 16,
        first=labels[0],
        last=labels[-1],
    )
    legend = _legend(colours, y=height - 14)
    return _svg(title, width, height, mark_safe("".join(bars)) + axis + legend)


def grouped_bars(
    labels: Sequence[str],
    series: dict[str, Sequence[Decimal]],
    *,
    title: str,
    unit: str = "USD",
    empty: str = "Nothing recorded in this period yet.",
    width: int = 720,
    height: int = 240,
) -> SafeString:
    """Return an SVG with, per label, one bar for each series side by side.

    Values below zero are drawn below the axis, so a negative margin shows.
    """
    for name, values in series.items():
        if len(values) != len(labels):
            raise ValueError(
                f"Series {name!r} has {len(values)} values for {len(labels)} labels."
            )
    every_value = [value for values in series.values() for value in values]
    high = max([ZERO, *every_value])
    low = min([ZERO, *every_value])
    if not labels or high == low:
        return _empty_chart(title, empty, width, height)

    plot_left, plot_top, plot_bottom = 64, 12, height - 56
    plot_height = Decimal(plot_bottom - plot_top)
    scale = plot_height / (high - low)
    zero_y = plot_top + high * scale
    slot = Decimal(width - plot_left - 8) / len(labels)
    bar_width = max(slot * Decimal("0.8") / len(series), Decimal(1))
    colours = _colours(series)
    bars = []
    label_marks = []
    for index, label in enumerate(labels):
        left = plot_left + slot * index + slot * Decimal("0.1")
        for position, (name, values) in enumerate(series.items()):
            value = values[index]
            y = zero_y - value * scale if value > 0 else zero_y
            bars.append(
                format_html(
                    '<rect x="{}" y="{}" width="{}" height="{}" fill="{}">'
                    "<title>{}: {} {} {}</title></rect>",
                    _px(left + bar_width * position),
                    _px(y),
                    _px(bar_width),
                    _px(abs(value) * scale),
                    colours[name],
                    label,
                    name,
                    _amount(value),
                    unit,
                )
            )
        label_marks.append(
            format_html(
                '<text x="{}" y="{}" text-anchor="middle" font-size="11">{}</text>',
                _px(plot_left + slot * index + slot / 2),
                plot_bottom + 16,
                label,
            )
        )
    axis = format_html(
        '<line x1="{left}" y1="{zero}" x2="{right}" y2="{zero}" stroke="#666"/>'
        '<text x="{label_x}" y="{top_y}" text-anchor="end" font-size="11">{high}</text>'
        '<text x="{label_x}" y="{bottom}" text-anchor="end" font-size="11">{low}</text>',
        left=plot_left,
        right=width - 8,
        zero=_px(zero_y),
        label_x=plot_left - 6,
        top_y=plot_top + 10,
        high=f"{_amount(high)} {unit}",
        bottom=plot_bottom,
        low=f"{_amount(low)} {unit}",
    )
    legend = _legend(colours, y=height - 14)
    body = mark_safe("".join(bars) + "".join(label_marks))
    return _svg(title, width, height, body + axis + legend)


def top_series(
    series: dict[str, Sequence[Decimal]], *, keep: int = len(PALETTE) - 1
) -> dict[str, list[Decimal]]:
    """Return the `keep` series with the largest totals, the rest summed as "other"."""
    ranked = sorted(series.items(), key=lambda item: (-sum(item[1], ZERO), item[0]))
    kept = {name: list(values) for name, values in ranked[:keep]}
    rest = ranked[keep:]
    if rest:
        length = len(rest[0][1])
        kept["other"] = [
            sum((values[index] for _, values in rest), ZERO) for index in range(length)
        ]
    return kept


def _colours(series: dict) -> dict[str, str]:
    colours = {}
    for index, name in enumerate(series):
        if name == "other":
            colours[name] = OTHER_COLOUR
        else:
            colours[name] = PALETTE[index % len(PALETTE)]
    return colours


def _legend(colours: dict[str, str], *, y: int) -> SafeString:
    items = []
    x = 8
    for name, colour in colours.items():
        items.append((x, y - 9, colour, x + 14, y, name))
        x += 24 + 7 * len(name)
    return format_html_join(
        "",
        '<rect x="{}" y="{}" width="10" height="10" fill="{}"/>'
        '<text x="{}" y="{}" font-size="11">{}</text>',
        items,
    )


def _svg(title: str, width: int, height: int, body: SafeString) -> SafeString:
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        'viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMinYMin meet">'
        "<title>{title}</title>{body}</svg>",
        width=width,
        height=height,
        title=title,
        body=body,
    )


def _empty_chart(title: str, empty: str, width: int, height: int) -> SafeString:
    body = format_html(
        '<text x="{}" y="{}" text-anchor="middle" font-size="13" fill="#666">{}</text>',
        width // 2,
        height // 2,
        empty,
    )
    return _svg(title, width, height, body)


def _px(value: Decimal) -> str:
    return str(Decimal(value).quantize(PIXEL, rounding=ROUND_HALF_UP))


def _amount(value: Decimal) -> str:
    """Return `value` with at most 6 decimal places and no trailing zeros."""
    text = format(value.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"
