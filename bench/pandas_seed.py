"""The seeds' approach: pandas `read_sql` of each totesys table, transforms in pandas, `DataFrame.to_sql`
into the warehouse (the way the public student projects this platform grew from did it).

Initial: every row of every table. Tick: rows with `last_updated` past the watermark kept in the
warehouse (`bench_pandas.watermark`). Dimensions are upserted, fact versions appended (ON CONFLICT on
the version key), into the real warehouse schema with its constraints, in one transaction.

Run: python bench/pandas_seed.py --source URL --target URL --mode initial|tick. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd
import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from totesys_platform.redaction import redact_url  # noqa: E402
from totesys_platform.source.contract import SOURCE_TABLES, TABLE_NAMES  # noqa: E402
from totesys_platform.star_schema import FACTS, TARGET_TABLES, TargetColumn, TargetTable  # noqa: E402
from totesys_platform.warehouse.schema import ensure_schema  # noqa: E402

STATE = "bench_pandas"
CHUNK = 10_000


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))


def _upsert_method(kind: str, natural_key: str):
    """A `to_sql` insert method: dimensions upsert on their key, facts skip versions already present."""

    def method(table, conn, keys, data_iter):
        rows = [dict(zip(keys, row)) for row in data_iter]
        stmt = pg_insert(table.table)
        if kind == "fact":
            stmt = stmt.on_conflict_do_nothing()
        else:
            stmt = stmt.on_conflict_do_update(
                index_elements=[natural_key], set_={k: stmt.excluded[k] for k in keys if k != natural_key})
        return conn.execute(stmt, rows).rowcount

    return method


def _latest(df: pd.DataFrame, key: str) -> pd.DataFrame:
    return df.sort_values("last_updated").drop_duplicates(key, keep="last")


def _iso_4217_names(codes: pd.Series) -> pd.Series:
    import pycountry  # the same maintained table the platform uses (contract rule 9)

    return codes.map({c.alpha_3: c.name for c in pycountry.currencies})


# Each warehouse column from its source column `v` (a Series of the rows), by the model's `how`.
_PANDAS_OF = {
    "copy": lambda v: v,
    "date_of": lambda v: pd.to_datetime(v).dt.date,
    "time_of": lambda v: pd.to_datetime(v).dt.time,
    "text_date": lambda v: pd.to_datetime(v, format="%Y-%m-%d").dt.date,
    "iso_4217_name": _iso_4217_names,
}
REFERENCE_PREFIX = "ref."  # a joined dimension's reference columns, kept apart from the main row's


def _column(table: TargetTable, column: TargetColumn, rows: pd.DataFrame) -> pd.Series:
    if column.how == "deleted_at":  # a snapshot baseline sees no delete
        return pd.Series(pd.NaT, index=rows.index, dtype="datetime64[ms]")
    if column.how not in _PANDAS_OF:
        raise NotImplementedError(
            f"bench/pandas_seed.py cannot build {table.name}.{column.name}: star_schema derives it by "
            f"{column.how!r}, which the pandas approach has no transform for; add it to _PANDAS_OF")
    source, name = table.origin(column)
    if table.join and source == table.join.table:
        name = REFERENCE_PREFIX + name
    return _PANDAS_OF[column.how](rows[name])


def _source_rows(table: TargetTable, frames: dict[str, pd.DataFrame],
                 reference: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The rows a target table is built from: every new version (facts), each new key's latest (dimensions),
    or, joined, each current main row whose own row or reference row changed (contract rule 5)."""
    key = SOURCE_TABLES[table.source].primary_key
    if table.kind == "fact":
        return frames[table.source]
    if table.join is None:
        return _latest(frames[table.source], key)
    partner, fk = table.join.table, table.join.foreign_key
    partner_key = SOURCE_TABLES[partner].primary_key
    main = _latest(reference[table.source], key)
    main = main[main[key].isin(frames[table.source][key]) | main[fk].isin(frames[partner][partner_key])]
    partners = _latest(reference[partner], partner_key).add_prefix(REFERENCE_PREFIX)
    return main.merge(partners, left_on=fk, right_on=REFERENCE_PREFIX + partner_key)


def reference_tables() -> set[str]:
    """The source tables read in full: both sides of each joined dimension."""
    return {name for t in TARGET_TABLES.values() if t.join for name in (t.source, t.join.table)}


def transform(frames: dict[str, pd.DataFrame], reference: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The warehouse tables from the new rows (`frames`) and the full reference tables, column by column
    from the model (`star_schema`)."""
    out: dict[str, pd.DataFrame] = {}
    for name, table in TARGET_TABLES.items():
        if table.source is None:
            continue  # dim_date, below
        rows = _source_rows(table, frames, reference)
        out[name] = pd.DataFrame({c.name: _column(table, c, rows) for c in table.columns}, index=rows.index)
    dates = pd.concat([out[f][c.name] for f in FACTS for c in TARGET_TABLES[f].columns
                       if c.references == "dim_date.date_id"])
    if len(dates):
        days = pd.date_range(min(dates), max(dates), freq="D")
        out["dim_date"] = pd.DataFrame({
            "date_id": days.date, "year": days.year, "month": days.month, "day": days.day,
            "day_of_week": days.dayofweek + 1, "day_name": days.day_name(), "month_name": days.month_name(),
            "quarter": days.quarter})
    else:
        out["dim_date"] = pd.DataFrame(columns=TARGET_TABLES["dim_date"].column_names)
    return {name: df[TARGET_TABLES[name].column_names] for name, df in out.items()}


LOAD_ORDER = sorted(TARGET_TABLES, key=lambda t: TARGET_TABLES[t].kind != "dimension")  # dimensions first (rule 7)


def run(source_url: str, target_url: str, mode: str) -> dict:
    timings = {}
    with psycopg.connect(target_url) as conn:
        ensure_schema(conn)
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {STATE}")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {STATE}.watermark (table_name text PRIMARY KEY, "
                     "watermark timestamp(3))")
        conn.commit()
        marks = dict(conn.execute(f"SELECT table_name, watermark FROM {STATE}.watermark").fetchall())
    started = time.monotonic()
    src = _engine(source_url)
    frames, reference = {}, {}
    with src.connect() as conn:
        conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        for table in TABLE_NAMES:
            query = sa.select(sa.text("*")).select_from(sa.table(table))  # the name is quoted by SQLAlchemy
            if mode == "tick" and marks.get(table) is not None:
                query = query.where(sa.column("last_updated") > marks[table])
            frames[table] = pd.read_sql(query, conn)
        for table in sorted(reference_tables()):
            reference[table] = (frames[table] if mode == "initial"
                                else pd.read_sql(sa.select(sa.text("*")).select_from(sa.table(table)), conn))
    timings["read_s"] = time.monotonic() - started
    started = time.monotonic()
    tables = transform(frames, reference)
    timings["transform_s"] = time.monotonic() - started
    started = time.monotonic()
    dst = _engine(target_url)
    written = {}
    with dst.begin() as conn:
        for name in LOAD_ORDER:
            spec = TARGET_TABLES[name]
            method = _upsert_method(spec.kind, spec.natural_key)
            written[name] = int(tables[name].to_sql(name, conn, if_exists="append", index=False,
                                                    chunksize=CHUNK, method=method) or 0)
        for table, df in frames.items():
            if len(df):
                conn.execute(sa.text(
                    f"INSERT INTO {STATE}.watermark VALUES (:t, :w) ON CONFLICT (table_name) "
                    "DO UPDATE SET watermark = greatest(EXCLUDED.watermark, watermark.watermark)"),
                    {"t": table, "w": df["last_updated"].max().to_pydatetime()})
    timings["write_s"] = time.monotonic() - started
    return {"mode": mode, "rows_read": int(sum(len(f) for f in frames.values())), "written": written, **timings}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--mode", choices=("initial", "tick"), required=True)
    args = parser.parse_args(argv)
    try:
        print(json.dumps(run(args.source, args.target, args.mode), default=str))
    except (psycopg.Error, sa.exc.SQLAlchemyError) as err:
        print(f"pandas {args.mode} from {redact_url(args.source)} to {redact_url(args.target)} failed: "
              f"{str(err).strip()[:2000]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
