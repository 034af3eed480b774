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
from totesys_platform.source.contract import TABLE_NAMES  # noqa: E402
from totesys_platform.star_schema import TARGET_TABLES  # noqa: E402
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


def _split(df: pd.DataFrame, column: str, prefix: str) -> None:
    ts = pd.to_datetime(df[column])
    df[f"{prefix}_date"] = ts.dt.date
    df[f"{prefix}_time"] = ts.dt.time


def _dates(series: pd.Series) -> pd.Series:
    return pd.to_datetime(series, format="%Y-%m-%d").dt.date


def _latest(df: pd.DataFrame, key: str) -> pd.DataFrame:
    return df.sort_values("last_updated").drop_duplicates(key, keep="last")


def transform(frames: dict[str, pd.DataFrame], reference: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The 11 warehouse tables from the new rows (`frames`) and the full reference tables."""
    import pycountry

    iso = {c.alpha_3: c.name for c in pycountry.currencies}
    out: dict[str, pd.DataFrame] = {}
    out["dim_location"] = _latest(frames["address"], "address_id").rename(columns={"address_id": "location_id"})
    out["dim_design"] = _latest(frames["design"], "design_id")
    currency = _latest(frames["currency"], "currency_id")
    out["dim_currency"] = currency.assign(currency_name=currency["currency_code"].map(iso))
    out["dim_payment_type"] = _latest(frames["payment_type"], "payment_type_id")
    out["dim_transaction"] = _latest(frames["transaction"], "transaction_id")
    # Counterparty and staff are re-derived when either side changed (contract rule 5).
    address = _latest(reference["address"], "address_id")
    counterparty = _latest(reference["counterparty"], "counterparty_id")
    counterparty = counterparty[counterparty["counterparty_id"].isin(frames["counterparty"]["counterparty_id"])
                                | counterparty["legal_address_id"].isin(frames["address"]["address_id"])]
    merged = counterparty.merge(address, left_on="legal_address_id", right_on="address_id")
    out["dim_counterparty"] = merged.rename(columns={
        "address_line_1": "counterparty_legal_address_line_1", "address_line_2": "counterparty_legal_address_line_2",
        "district": "counterparty_legal_district", "city": "counterparty_legal_city",
        "postal_code": "counterparty_legal_postal_code", "country": "counterparty_legal_country",
        "phone": "counterparty_legal_phone_number"})
    department = _latest(reference["department"], "department_id")
    staff = _latest(reference["staff"], "staff_id")
    staff = staff[staff["staff_id"].isin(frames["staff"]["staff_id"])
                  | staff["department_id"].isin(frames["department"]["department_id"])]
    out["dim_staff"] = staff.merge(department, on="department_id")
    for fact, table in (("fact_sales_order", "sales_order"), ("fact_purchase_order", "purchase_order"),
                        ("fact_payment", "payment")):
        df = frames[table].copy()
        _split(df, "created_at", "created")
        _split(df, "last_updated", "last_updated")
        for col in ("agreed_delivery_date", "agreed_payment_date", "payment_date"):
            if col in df:
                df[col] = _dates(df[col])
        df["deleted_at"] = pd.Series(pd.NaT, index=df.index, dtype="datetime64[ms]")  # a snapshot baseline sees no delete
        out[fact] = df.rename(columns={"staff_id": "sales_staff_id"}) if fact == "fact_sales_order" else df
    dates = pd.concat([out[f][c] for f in ("fact_sales_order", "fact_purchase_order", "fact_payment")
                       for c in TARGET_TABLES[f].column_names if c.endswith("_date") and c in out[f]])
    if len(dates):
        days = pd.date_range(min(dates), max(dates), freq="D")
        out["dim_date"] = pd.DataFrame({
            "date_id": days.date, "year": days.year, "month": days.month, "day": days.day,
            "day_of_week": days.dayofweek + 1, "day_name": days.day_name(), "month_name": days.month_name(),
            "quarter": days.quarter})
    else:
        out["dim_date"] = pd.DataFrame(columns=TARGET_TABLES["dim_date"].column_names)
    return {name: df[TARGET_TABLES[name].column_names] for name, df in out.items()}


LOAD_ORDER = ("dim_date", "dim_location", "dim_design", "dim_currency", "dim_payment_type", "dim_transaction",
              "dim_counterparty", "dim_staff", "fact_sales_order", "fact_purchase_order", "fact_payment")


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
        for table in ("address", "counterparty", "department", "staff"):
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
