"""The sales report renders names from the source as plain text: in the chart and in the Markdown metadata."""

from __future__ import annotations

from decimal import Decimal

from totesys_platform.analytics.report import SalesFigures, render_chart, render_markdown

AWKWARD = ["Tote $5 $10 deal", "Pipe | and *stars*", "Back\\slash_under", "Half $^$ off"]


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
    assert "| O'Keefe \\| Sons \\$ | GBP | 99.99 |" in text
    # Every table row still has its columns: no unescaped pipe from the data.
    for line in text.splitlines():
        if line.startswith("| Pipe"):
            assert line.replace("\\|", "").count("|") == 3
