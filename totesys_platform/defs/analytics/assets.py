"""The sales report asset: downstream of the warehouse, published to the lake and shown in the UI."""

from datetime import datetime, timezone

import dagster as dg

from totesys_platform.analytics.report import query_figures, render_chart, render_html, render_markdown
from totesys_platform.defs.resources import LakeResource, WarehouseDatabase
from totesys_platform.defs.warehouse.assets import warehouse_key

REPORT_TABLES = ("fact_sales_order", "fact_payment", "dim_currency", "dim_design", "dim_counterparty", "dim_payment_type")


@dg.asset(
    key=dg.AssetKey(["analytics", "sales_report"]),
    deps=[warehouse_key(t) for t in REPORT_TABLES],
    group_name="analytics",
    kinds={"html", "matplotlib"},
    owners=["team:data-engineering"],
    description=(
        "Sales by month and currency, top designs, top counterparties and payments outstanding, from the "
        "warehouse's current state: a chart and an HTML page in the lake (processed zone, `reports/`)."
    ),
)
def sales_report(context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseDatabase):
    with warehouse.connect() as conn:
        figures = query_figures(conn)
    now = datetime.now(timezone.utc)
    stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
    chart = render_chart(figures)
    store = lake.processed().objects  # plain objects beside the tables
    png_key, html_key = f"reports/{now:%Y/%m/%d}/sales_report_{stamp}.png", f"reports/{now:%Y/%m/%d}/sales_report_{stamp}.html"
    store.write_bytes(png_key, chart, exclusive=True)
    store.write_bytes(html_key, render_html(figures, chart, now.isoformat(timespec="seconds")).encode(), exclusive=True)
    context.log.info(f"Sales report written to {store.uri(html_key)}")
    return dg.MaterializeResult(metadata={
        "summary": dg.MetadataValue.md(render_markdown(figures)),
        "chart": dg.MetadataValue.path(store.uri(png_key)),
        "report": dg.MetadataValue.url(store.uri(html_key)),
        "payments_outstanding": sum(n for _, n, _ in figures.outstanding),
        "months_covered": len({m for m, _, _ in figures.sales_by_month}),
    })
