"""Validation of the warehouse against the lake (plain logic, no Dagster): the facts of the asset checks."""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from totesys_platform.lake.manifest import TableLog
from totesys_platform.lake.processed.runner import read_processed
from totesys_platform.lake.quarantine import drop_quarantined, quarantined_versions
from totesys_platform.lake.store import LakeStore
from totesys_platform.star_schema import TARGET_TABLES
from totesys_platform.warehouse.loader import read_query, read_table

FACT_SOURCES = {"fact_sales_order": "sales_order", "fact_purchase_order": "purchase_order", "fact_payment": "payment"}
SAMPLE = 10


@dataclass
class HistoryReport:
    fact: str
    lake_versions: int = 0
    warehouse_versions: int = 0
    missing: list[tuple] = field(default_factory=list)       # archived in the lake, absent from the warehouse
    unexpected: list[tuple] = field(default_factory=list)    # in the warehouse, never archived
    duplicated: list[tuple] = field(default_factory=list)    # in the warehouse more than once
    missing_count: int = 0
    unexpected_count: int = 0
    duplicated_count: int = 0

    @property
    def passed(self) -> bool:
        return not (self.missing_count or self.unexpected_count or self.duplicated_count)


def _version_table(ids: pa.Array, stamps: pa.Array) -> pa.Table:
    return pa.table({"id": pc.cast(ids, pa.int64()), "ts": pc.cast(stamps, pa.timestamp("ms"))})


def lake_versions(ingestion: LakeStore, source_table: str) -> pa.Table:
    """Every (id, last_updated) archived for a source table, from the manifest-referenced files."""
    log = TableLog(ingestion, source_table)
    pk = f"{source_table}_id"
    parts = [log.read(e, columns=[pk, "last_updated"]) for e in log.entries() if e.file]
    if not parts:
        return _version_table(pa.array([], pa.int64()), pa.array([], pa.timestamp("ms")))
    t = drop_quarantined(pa.concat_tables(parts), quarantined_versions(ingestion, source_table))
    return _version_table(t[pk], t["last_updated"])


def warehouse_versions(conn: psycopg.Connection, fact: str) -> pa.Table:
    """Every (id, last_updated) version in a warehouse fact, read with COPY (no per-row Python)."""
    target = TARGET_TABLES[fact]
    data = read_table(conn, fact).select([target.natural_key, "last_updated_date", "last_updated_time"])
    return _version_table(data[target.natural_key], _combine(data["last_updated_date"], data["last_updated_time"]))


def _combine(dates: pa.ChunkedArray, times: pa.ChunkedArray) -> pa.Array:
    """date32 + time32[ms] -> timestamp[ms]."""
    day_ms = pc.multiply(pc.cast(pc.cast(dates, pa.int32()), pa.int64()), 86_400_000)
    return pc.cast(pc.add(day_ms, pc.cast(pc.cast(times, pa.int32()), pa.int64())), pa.timestamp("ms"))


def _keys(t: pa.Table, limit: int) -> list[tuple]:
    return [(r["id"], str(r["ts"])) for r in t.slice(0, limit).to_pylist()]


def fact_history_report(conn: psycopg.Connection, ingestion: LakeStore, fact: str) -> HistoryReport:
    """Every archived version appears exactly once in the warehouse, and nothing else does."""
    lake = lake_versions(ingestion, FACT_SOURCES[fact])
    wh = warehouse_versions(conn, fact)
    report = HistoryReport(fact, lake_versions=lake.num_rows, warehouse_versions=wh.num_rows)
    counts = wh.group_by(["id", "ts"]).aggregate([("id", "count")])
    dup = counts.filter(pc.greater(counts["id_count"], 1))
    report.duplicated_count, report.duplicated = dup.num_rows, _keys(dup, SAMPLE)
    lake_u = lake.group_by(["id", "ts"]).aggregate([])
    wh_u = counts.select(["id", "ts"])
    missing = lake_u.join(wh_u, ["id", "ts"], join_type="left anti")
    unexpected = wh_u.join(lake_u, ["id", "ts"], join_type="left anti")
    report.missing_count, report.missing = missing.num_rows, _keys(missing.sort_by("id"), SAMPLE)
    report.unexpected_count, report.unexpected = unexpected.num_rows, _keys(unexpected.sort_by("id"), SAMPLE)
    return report


def _as_text(table: pa.Table) -> pa.Table:
    """Every column as text, so rows compare (and join) by value whatever their types."""
    return pa.table({name: pc.cast(table[name], pa.string()) for name in table.column_names})


def latest_versions(data: pa.Table, natural_key: str) -> pa.Table:
    """The latest version (by last_updated date, then time) of each natural id."""
    if data.num_rows == 0:
        return data
    ordered = data.sort_by([(natural_key, "ascending"), ("last_updated_date", "ascending"),
                            ("last_updated_time", "ascending")])
    ids = ordered[natural_key].combine_chunks()
    # The last row of each run of equal ids is that id's latest version.
    is_last = pc.not_equal(ids[:-1], ids[1:]) if len(ids) > 1 else pa.array([], pa.bool_())
    mask = pa.concat_arrays([is_last, pa.array([True])])
    return ordered.filter(mask)


def current_state_mismatches(conn: psycopg.Connection, processed: LakeStore, fact: str) -> tuple[int, list]:
    """Natural ids whose `<fact>_current` row differs from the latest processed version of that id."""
    target = TARGET_TABLES[fact]
    data, _ = read_processed(processed, fact)
    expected = _as_text(latest_versions(data, target.natural_key).select(target.column_names))
    actual = _as_text(read_current_view(conn, fact))
    keys = target.column_names
    only_expected = expected.join(actual, keys, join_type="left anti")
    only_actual = actual.join(expected, keys, join_type="left anti")
    bad = sorted({int(v) for v in only_expected[target.natural_key].to_pylist() + only_actual[target.natural_key].to_pylist()})
    return len(bad), bad[:SAMPLE]


def read_current_view(conn: psycopg.Connection, fact: str) -> pa.Table:
    """`<fact>_current` as Arrow with the fact's types."""
    schema = TARGET_TABLES[fact].arrow_schema
    query = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in schema.names), sql.Identifier(f"{fact}_current"))
    return read_query(conn, query, schema, f"{fact}_current")


def dangling_references(conn: psycopg.Connection, fact: str) -> dict[str, int]:
    """Per foreign-key column of a fact: how many rows refer to a dimension row that does not exist."""
    out: dict[str, int] = {}
    for col in TARGET_TABLES[fact].columns:
        if not col.references:
            continue
        dim, dim_col = col.references.split(".")
        query = sql.SQL(
            "SELECT count(*) FROM {f} f WHERE NOT EXISTS (SELECT 1 FROM {d} d WHERE d.{dc} = f.{c})"
        ).format(f=sql.Identifier(fact), d=sql.Identifier(dim), dc=sql.Identifier(dim_col), c=sql.Identifier(col.name))
        out[col.name] = conn.execute(query).fetchone()[0]
    return out


DIMENSION_SOURCES = {
    "dim_staff": ("staff", "staff_id"), "dim_location": ("address", "address_id"),
    "dim_currency": ("currency", "currency_id"), "dim_design": ("design", "design_id"),
    "dim_counterparty": ("counterparty", "counterparty_id"), "dim_payment_type": ("payment_type", "payment_type_id"),
    "dim_transaction": ("transaction", "transaction_id"),
}


def dimension_reconciliation(conn: psycopg.Connection, ingestion: LakeStore, dim: str) -> tuple[int, int]:
    """(distinct keys archived in the lake, rows in the warehouse dimension)."""
    source, pk = DIMENSION_SOURCES[dim]
    log = TableLog(ingestion, source)
    parts = [log.read(e, columns=[pk, "last_updated"]) for e in log.entries() if e.file]
    kept = drop_quarantined(pa.concat_tables(parts), quarantined_versions(ingestion, source)) if parts else None
    lake_keys = len(pc.unique(kept[pk])) if kept is not None else 0
    count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(dim))).fetchone()[0]
    return lake_keys, count
