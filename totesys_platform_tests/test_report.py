"""The sales report renders names from the source as plain text: in the chart and in the Markdown metadata."""

from __future__ import annotations

from decimal import Decimal

from totesys_platform.analytics.report import SalesFigures, render_chart, render_markdown

AWKWARD = ["Tote $5 $10 deal", "Pipe | and *stars*", "Back\\slash_under", "Half $^$ off", "R&amp;D &lt;b&gt;"]


def figures() -> SalesFigures:
    return SalesFigures(
        sales_by_month=[("2024-01", "GBP", Decimal("10.50")), ("2024-02", "GBP", Decimal("12.25"))],
        top_designs=[(name, 100 - i) for i, name in enumerate(AWKWARD)],
        top_counterparties=[("O'Keefe | Sons $", "GBP", Decimal("99.99"))],
        outstanding=[("GBP", 2, Decimal("3.50"))],
    )


def test_a_design_name_with_dollars_draws_as_text_not_mathtext():
    png = render_chart(figures())  # as mathtext, "$^$" raises and "$5 $" loses its dollars
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_markdown_cells_escape_the_source_texts_markup():
    text = render_markdown(figures())
    assert "| Tote \\$5 \\$10 deal | 100 |" in text
    assert "| Pipe \\| and \\*stars\\* | 99 |" in text
    assert "| Back\\\\slash\\_under | 98 |" in text
    assert "| R\\&amp;D \\&lt;b\\&gt; | 96 |" in text  # entities stay text, not "R&D <b>"
    assert "| O'Keefe \\| Sons \\$ | GBP | 99.99 |" in text
    # Every table row still has its columns: no unescaped pipe from the data.
    for line in text.splitlines():
        if line.startswith("| Pipe"):
            assert line.replace("\\|", "").count("|") == 3


def test_each_markdown_cell_renders_as_exactly_the_source_text():
    """Through a CommonMark parser with GFM tables (markdown-it-py, which Dagster's `rich` brings), every name
    comes out as the characters the source holds: no emphasis, no entity, no math, no extra column."""
    import html
    import re

    from markdown_it import MarkdownIt

    rendered = MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(render_markdown(figures()))
    cells = [html.unescape(cell) for cell in re.findall(r"<td>(.*?)</td>", rendered)]
    for name in [*AWKWARD, "O'Keefe | Sons $"]:
        assert name in cells
