"""The sales report: the numbers a sales team asks for, from the warehouse's current-state views.

Plain logic, no Dagster: queries return small tables of rows, rendering makes a PNG chart (matplotlib),
an HTML page and a markdown summary.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from decimal import Decimal

import psycopg

# The three sales figures from one pass over fact_sales_order_current (the view picks each order's latest
# version: at scale 100 that pass is most of the report's cost, so it is made once, not once per figure).
# GROUPING() tells the grouping sets apart: 3 = (month, currency), 13 = (design), 10 = (counterparty, currency).
# Each branch numbers its rows in the figure's order (ties broken by name, in the database's collation).
SALES_FIGURES_SQL = """
WITH grouped AS (
  SELECT date_trunc('month', f.created_date::timestamp) AS month, f.currency_id, f.design_id, f.counterparty_id,
         sum(f.units_sold * f.unit_price) AS sales_value, sum(f.units_sold) AS units_sold,
         GROUPING(date_trunc('month', f.created_date::timestamp), f.currency_id, f.design_id, f.counterparty_id)
           AS grouping_set
  FROM fact_sales_order_current f
  GROUP BY GROUPING SETS ((date_trunc('month', f.created_date::timestamp), f.currency_id), (f.design_id),
                          (f.counterparty_id, f.currency_id))
), by_month AS (
  SELECT to_char(g.month, 'YYYY-MM') AS name, c.currency_code, sum(g.sales_value) AS sales_value
  FROM grouped g JOIN dim_currency c USING (currency_id) WHERE g.grouping_set = 3 GROUP BY 1, 2
), by_design AS (
  SELECT d.design_name AS name, g.units_sold
  FROM grouped g JOIN dim_design d USING (design_id) WHERE g.grouping_set = 13
), by_counterparty AS (
  SELECT cp.counterparty_legal_name AS name, c.currency_code, sum(g.sales_value) AS sales_value
  FROM grouped g JOIN dim_counterparty cp USING (counterparty_id) JOIN dim_currency c USING (currency_id)
  WHERE g.grouping_set = 10 GROUP BY 1, 2
)
SELECT 'month', row_number() OVER (ORDER BY name, currency_code), name, currency_code, sales_value, NULL::bigint
FROM by_month
UNION ALL
(SELECT 'design', row_number() OVER (ORDER BY units_sold DESC, name), name, NULL, NULL, units_sold
 FROM by_design ORDER BY units_sold DESC, name LIMIT %(limit)s)
UNION ALL
(SELECT 'counterparty', row_number() OVER (ORDER BY sales_value DESC, name), name, currency_code, sales_value, NULL
 FROM by_counterparty ORDER BY sales_value DESC, name LIMIT %(limit)s)
"""
OUTSTANDING_SQL = """
SELECT c.currency_code, count(*) AS payments, sum(p.payment_amount) AS amount
FROM fact_payment_current p JOIN dim_currency c USING (currency_id) JOIN dim_payment_type t USING (payment_type_id)
WHERE NOT p.paid AND t.payment_type_name = 'SALES_RECEIPT'
GROUP BY 1 ORDER BY 1
"""


@dataclass(frozen=True)
class SalesFigures:
    sales_by_month: list[tuple[str, str, Decimal]]
    top_designs: list[tuple[str, int]]
    top_counterparties: list[tuple[str, str, Decimal]]
    outstanding: list[tuple[str, int, Decimal]]


def query_figures(conn: psycopg.Connection, *, top: int = 5) -> SalesFigures:
    rows = sorted(conn.execute(SALES_FIGURES_SQL, {"limit": top}).fetchall(), key=lambda r: (r[0], r[1]))
    return SalesFigures(
        sales_by_month=[(name, currency, value) for kind, _, name, currency, value, _ in rows if kind == "month"],
        top_designs=[(name, int(units)) for kind, _, name, _, _, units in rows if kind == "design"],
        top_counterparties=[(name, currency, value) for kind, _, name, currency, value, _ in rows
                            if kind == "counterparty"],
        outstanding=[tuple(r) for r in conn.execute(OUTSTANDING_SQL)],
    )


def render_chart(figures: SalesFigures) -> bytes:
    """PNG: monthly sales value per currency (lines) and the top designs by units (bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Names come from the source: a '$' in a design name is text, not matplotlib's mathtext.
    with plt.rc_context({"text.parse_math": False}):
        return _draw_chart(plt, figures)


def _draw_chart(plt, figures: SalesFigures) -> bytes:
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5), dpi=100)
    months = sorted({m for m, _, _ in figures.sales_by_month})
    for currency in sorted({c for _, c, _ in figures.sales_by_month}):
        values = {m: float(v) for m, c, v in figures.sales_by_month if c == currency}
        left.plot(months, [values.get(m, 0.0) for m in months], marker="o", markersize=3, label=currency)
    left.set_title("Sales value by month and currency")
    left.tick_params(axis="x", labelrotation=60, labelsize=7)
    left.legend()
    names = [n for n, _ in figures.top_designs][::-1]
    right.barh(names, [u for _, u in figures.top_designs][::-1], color="#4f6bed")
    right.set_title("Top designs by units sold")
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()


def _money(v: Decimal) -> str:
    return f"{v:,.2f}"


def _md(text: object) -> str:
    """Source text as plain text in a Markdown table cell: markup characters escaped (`&` too, so that
    `&lt;` stays those four characters rather than an entity), no line breaks."""
    escaped = "".join("\\" + c if c in "\\`*_[]<>|$~&" else c for c in str(text))
    return " ".join(escaped.split())


def render_markdown(figures: SalesFigures) -> str:
    lines = ["### Payments outstanding (sales receipts not yet paid)", "| currency | payments | amount |", "|---|---|---|"]
    lines += [f"| {c} | {n} | {_money(a)} |" for c, n, a in figures.outstanding] or ["| - | 0 | 0.00 |"]
    lines += ["", "### Top counterparties by sales value", "| counterparty | currency | sales value |", "|---|---|---|"]
    lines += [f"| {_md(n)} | {c} | {_money(v)} |" for n, c, v in figures.top_counterparties]
    lines += ["", "### Top designs by units sold", "| design | units |", "|---|---|"]
    lines += [f"| {_md(n)} | {u:,} |" for n, u in figures.top_designs]
    return "\n".join(lines)


def render_html(figures: SalesFigures, chart_png: bytes, generated_at: str) -> str:
    def table(headers: list[str], rows: list[tuple]) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_money(v) if isinstance(v, Decimal) else str(v))}</td>" for v in row) + "</tr>"
            for row in rows
        )
        return f"<table><tr>{head}</tr>{body}</table>"

    img = base64.b64encode(chart_png).decode()
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Terrific Totes sales report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:1.5em}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}</style></head><body>
<h1>Terrific Totes sales report</h1><p>Generated {html.escape(generated_at)} from the warehouse's current state.</p>
<img alt="Sales by month and top designs" src="data:image/png;base64,{img}">
<h2>Payments outstanding</h2>{table(["currency", "payments", "amount"], figures.outstanding)}
<h2>Top counterparties</h2>{table(["counterparty", "currency", "sales value"], figures.top_counterparties)}
<h2>Top designs</h2>{table(["design", "units sold"], figures.top_designs)}
<h2>Sales by month</h2>{table(["month", "currency", "sales value"], figures.sales_by_month)}
</body></html>"""
