"""Server-side SVG charts."""

from decimal import Decimal

import pytest

from billing.charts import grouped_bars, stacked_bars, top_series

D = Decimal


def test_stacked_bars_scale_to_tallest_day():
    svg = stacked_bars(
        ["d1", "d2"],
        {"sonnet": [D("3"), D("1")], "haiku": [D("1"), D("0")]},
        title="Cost",
        width=264,
        height=168,
    )
    # The plot is 100 px high and the tallest day totals 4 USD, so 3 USD is
    # 75 px and 1 USD is 25 px. Day 2 has a 25 px sonnet bar and no haiku bar.
    assert 'height="75.0"' in svg
    assert svg.count('height="25.0"') == 2
    assert "<title>d1: sonnet 3 USD</title>" in svg
    assert "<title>d2: haiku" not in svg
    assert 'fill="#999999"' not in svg


def test_stacked_bars_escape_labels():
    svg = stacked_bars(["<b>"], {"<script>": [D("1")]}, title="x & y")
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    assert "x &amp; y" in svg


def test_empty_chart_shows_message():
    svg = stacked_bars(["d1"], {"sonnet": [D("0")]}, title="Cost", empty="Nothing yet.")
    assert "Nothing yet." in svg
    assert "<rect" not in svg
    assert "Nothing yet." in grouped_bars([], {}, title="Trend", empty="Nothing yet.")


def test_series_length_must_match_labels():
    with pytest.raises(ValueError, match="has 1 values for 2 labels"):
        stacked_bars(["d1", "d2"], {"sonnet": [D("1")]}, title="Cost")


def test_grouped_bars_draw_negative_margin_below_axis():
    svg = grouped_bars(
        ["2026-11"],
        {"Revenue": [D("10")], "Margin": [D("-10")]},
        title="Trend",
        width=264,
        height=168,
    )
    # From +10 to -10 over 100 px: the axis sits at 62 px (12 + 50) and
    # both bars are 50 px, the negative one starting at the axis.
    assert 'y1="62.0"' in svg
    assert svg.count('height="50.0"') == 2
    assert '<rect x="83.2" y="12.0"' in svg
    assert '<rect x="160.0" y="62.0"' in svg
    assert "<title>2026-11: Margin -10 USD</title>" in svg


def test_top_series_sums_the_rest():
    series = {name: [D(index), D(1)] for index, name in enumerate("abcd")}
    kept = top_series(series, keep=2)
    assert list(kept) == ["d", "c", "other"]
    assert kept["other"] == [D(1), D(2)]
