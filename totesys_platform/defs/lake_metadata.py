"""Dagster metadata helpers for lake tables (schema, preview)."""

from __future__ import annotations

import dagster as dg
import pyarrow as pa


def column_schema(schema: pa.Schema) -> dg.TableSchema:
    return dg.TableSchema(columns=[
        dg.TableColumn(f.name, str(f.type), constraints=dg.TableColumnConstraints(nullable=f.nullable))
        for f in schema
    ])


def preview_markdown(table: pa.Table, rows: int = 5) -> str:
    """A small markdown table of the first rows (values rendered as text, NULL shown as NULL)."""
    head = table.slice(0, rows).to_pylist()
    names = table.schema.names
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for row in head:
        cells = ["NULL" if row[n] is None else str(row[n]).replace("|", "\\|") for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
