"""The in-database floor: what the work costs with nothing but PostgreSQL doing it.

1. Copy: binary `COPY <table> TO STDOUT` from totesys, piped into `COPY raw.<table> FROM STDIN` in the
   target database (psycopg 3, ~1 MB writes), every contract table read from one REPEATABLE READ snapshot.
2. Build: `INSERT ... SELECT` of the warehouse tables from those copies, column by column as the model
   (`star_schema`) derives them: the joins (counterparty+address, staff+department), the timestamp splits and
   text-date casts, dim_date
   from `generate_series`, into the real warehouse schema (`warehouse.schema.ensure_schema`: primary
   keys, unique version keys, foreign keys and indexes all on), in one transaction. On the initial build
   each fact is inserted the way any bulk load into PostgreSQL is best done, and the way our loader does
   it: foreign keys, the version key and the secondary indexes are dropped first and built once after the
   insert (the loader's own helpers), so the floor pays for the same constraints without per-row upkeep.

A tick copies only rows with `last_updated` past the previous copy's per-table watermark into `stage.*`,
appends them to `raw.*` (which keeps every version, like the lake's ingestion zone), upserts the
dimensions those rows touch and appends the new fact versions.

Run: python bench/floor.py --source URL --target URL --mode initial|tick. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from totesys_platform.redaction import redact_url  # noqa: E402
from totesys_platform.source.contract import SOURCE_TABLES, TABLE_NAMES  # noqa: E402
from totesys_platform.star_schema import (  # noqa: E402
    DIMENSIONS, FACTS, TARGET_TABLES, TargetColumn, TargetTable,
)
from totesys_platform.warehouse.bulk_levers import (  # noqa: E402
    foreign_keys_validated_once, indexes_built_after, memory_raised,
)
from totesys_platform.warehouse.loader import _check_references, _check_version_conflicts  # noqa: E402
from totesys_platform.warehouse.schema import ensure_schema  # noqa: E402

RAW, STAGE = "raw", "stage"
COPY_CHUNK = 1 << 20

# Each warehouse column as SQL over the source row `s` (its reference row `r`, when joined), derived from the
# model's `how` (constant text from this file, never user input). A derivation missing here fails loudly.
_SQL_OF: dict[str, str] = {
    "copy": "{v}", "date_of": "{v}::date", "time_of": "{v}::time(3)", "text_date": "{v}::date",
    # A snapshot-to-snapshot baseline never sees a delete: no fact row is marked deleted.
    "deleted_at": "NULL::timestamp(3)",
    "iso_4217_name": "iso.name",  # the ISO 4217 table joined as `iso` (see build_statements)
}


def _source_value(table: TargetTable, column: TargetColumn) -> sql.Identifier:
    """The source column a target column derives from, as `s.<col>` (the main row) or `r.<col>` (the joined one)."""
    source, name = table.origin(column)
    return sql.Identifier("r" if table.join and source == table.join.table else "s", name)


def column_sql(table: TargetTable, column: TargetColumn) -> sql.Composable:
    if column.how not in _SQL_OF:
        raise NotImplementedError(
            f"bench/floor.py cannot build {table.name}.{column.name}: star_schema derives it by {column.how!r}, "
            "which the floor has no SQL for; add it to _SQL_OF")
    return sql.SQL(_SQL_OF[column.how]).format(v=_source_value(table, column))


def _select_list(table: TargetTable) -> sql.Composable:
    return sql.SQL(", ").join(column_sql(table, c) for c in table.columns)


def _iso_4217() -> tuple[list[str], list[str]]:
    import pycountry  # the same maintained table the platform uses (contract rule 9)

    pairs = sorted((c.alpha_3, c.name) for c in pycountry.currencies)
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _raw_type(pg_type: str) -> str:
    # Enums arrive as their labels (binary COPY of an enum is its label's bytes): keep them as text.
    return "text" if pg_type.startswith('"') else pg_type


def create_raw_tables(conn: psycopg.Connection) -> None:
    for schema in (RAW, STAGE):
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    for table in TABLE_NAMES:
        cols = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(_raw_type(c.pg_type)))
            for c in SOURCE_TABLES[table].columns)
        conn.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(RAW, table), cols))
        conn.execute(sql.SQL("CREATE UNLOGGED TABLE {} (LIKE {})").format(
            sql.Identifier(STAGE, table), sql.Identifier(RAW, table)))
    conn.execute(sql.SQL("CREATE TABLE {} (table_name text PRIMARY KEY, watermark timestamp(3))").format(
        sql.Identifier(RAW, "_watermark")))


def copy_tables(source: psycopg.Connection, target: psycopg.Connection, into_schema: str,
                watermarks: dict[str, object] | None) -> dict[str, int]:
    """Pipe each table (or its rows past the watermark) from source to target with binary COPY."""
    rows = {}
    for table in TABLE_NAMES:
        cols = sql.SQL(", ").join(map(sql.Identifier, SOURCE_TABLES[table].column_names))
        if watermarks is None or watermarks.get(table) is None:
            out_stmt = sql.SQL("COPY {} ({}) TO STDOUT (FORMAT binary)").format(sql.Identifier(table), cols)
            params = None
        else:
            out_stmt = sql.SQL("COPY (SELECT {} FROM {} WHERE last_updated > %s) TO STDOUT (FORMAT binary)").format(
                cols, sql.Identifier(table))
            params = (watermarks[table],)
        in_stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(sql.Identifier(into_schema, table), cols)
        with source.cursor() as src_cur, target.cursor() as dst_cur:
            with src_cur.copy(out_stmt, params) as out_copy, dst_cur.copy(in_stmt) as in_copy:
                buffer = bytearray()
                for block in out_copy:
                    buffer += block
                    if len(buffer) >= COPY_CHUNK:
                        in_copy.write(buffer)
                        buffer = bytearray()
                in_copy.write(buffer)
            rows[table] = dst_cur.rowcount
    return rows


def _latest(schema: str, table: str, incremental: bool) -> sql.Composable:
    """The source rows to build from: the table itself, or each key's latest version in a history."""
    if not incremental:
        return sql.Identifier(schema, table)
    pk = sql.Identifier(SOURCE_TABLES[table].primary_key)
    return sql.SQL("(SELECT DISTINCT ON ({pk}) * FROM {t} ORDER BY {pk}, last_updated DESC)").format(
        pk=pk, t=sql.Identifier(schema, table))


def _insert(target: str, select: sql.Composable, incremental: bool) -> sql.Composable:
    table = TARGET_TABLES[target]
    cols = sql.SQL(", ").join(map(sql.Identifier, table.column_names))
    stmt = sql.SQL("INSERT INTO {} ({}) ").format(sql.Identifier("public", target), cols) + select
    if not incremental:
        return stmt
    if table.kind == "fact":
        return stmt + sql.SQL(" ON CONFLICT ON CONSTRAINT {} DO NOTHING").format(
            sql.Identifier(f"{target}_version_key"))
    updates = sql.SQL(", ").join(
        sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in table.column_names[1:])
    return stmt + sql.SQL(" ON CONFLICT ({}) DO UPDATE SET {}").format(sql.Identifier(table.natural_key), updates)


def build_statements(incremental: bool) -> list[tuple[str, sql.Composable]]:
    """The warehouse build, dimensions first (contract rule 7). Initial: from raw.*; tick: from stage.*."""
    src = STAGE if incremental else RAW
    stmts: list[tuple[str, sql.Composable]] = []
    # dim_date: every day between the earliest and latest date any new fact row refers to.
    bounds = []
    for fact in FACTS:
        table = TARGET_TABLES[fact]
        for column in table.columns:
            if column.references == "dim_date.date_id":
                bounds.append(sql.SQL("SELECT min({e}) AS lo, max({e}) AS hi FROM {t} AS s").format(
                    e=column_sql(table, column), t=sql.Identifier(src, table.source)))
    stmts.append(("dim_date", sql.SQL(
        "INSERT INTO public.dim_date (date_id, year, month, day, day_of_week, day_name, month_name, quarter) "
        "SELECT d::date, extract(year FROM d)::int, extract(month FROM d)::int, extract(day FROM d)::int, "
        "extract(isodow FROM d)::int, to_char(d, 'FMDay'), to_char(d, 'FMMonth'), extract(quarter FROM d)::int "
        "FROM (SELECT min(lo) AS lo, max(hi) AS hi FROM ({}) AS b) AS r, "
        "generate_series(r.lo, r.hi, interval '1 day') AS d ON CONFLICT (date_id) DO NOTHING"
    ).format(sql.SQL(" UNION ALL ").join(bounds))))
    for name in DIMENSIONS:
        table = TARGET_TABLES[name]
        if table.source is None:
            continue  # dim_date, above
        if table.join is None:
            rows = sql.SQL("{} AS s").format(_latest(src, table.source, incremental))
        else:
            # Re-derived when either side changed (contract rule 5); partners from the raw history.
            reference, fk = table.join.table, table.join.foreign_key
            reference_key = sql.Identifier(SOURCE_TABLES[reference].primary_key)
            rows = sql.SQL("{} AS s JOIN {} AS r ON r.{} = s.{}").format(
                _latest(RAW, table.source, incremental), _latest(RAW, reference, incremental), reference_key,
                sql.Identifier(fk))
        iso_columns = [c for c in table.columns if c.how == "iso_4217_name"]
        if len(iso_columns) > 1:
            raise NotImplementedError(f"bench/floor.py joins one ISO 4217 column per table; {name} has more")
        for column in iso_columns:
            rows += sql.SQL(" JOIN unnest(%(iso_codes)s::text[], %(iso_names)s::text[]) AS iso(code, name) "
                            "ON iso.code = {}").format(_source_value(table, column))
        select = sql.SQL("SELECT {} FROM ").format(_select_list(table)) + rows
        if table.join is not None and incremental:
            select += sql.SQL(" WHERE s.{pk} IN (SELECT {pk} FROM {st}) OR s.{fk} IN (SELECT {rk} FROM {sr})").format(
                pk=sql.Identifier(SOURCE_TABLES[table.source].primary_key), st=sql.Identifier(STAGE, table.source),
                fk=sql.Identifier(fk), rk=reference_key, sr=sql.Identifier(STAGE, reference))
        stmts.append((name, _insert(name, select, incremental)))
    for fact in FACTS:
        table = TARGET_TABLES[fact]
        select = sql.SQL("SELECT {} FROM {} AS s").format(_select_list(table), sql.Identifier(src, table.source))
        stmts.append((fact, _insert(fact, select, incremental)))
    return stmts


def _hows(name: str) -> set[str]:
    return {c.how for c in TARGET_TABLES[name].columns}


def run(source_url: str, target_url: str, mode: str) -> dict:
    incremental = mode == "tick"
    timings: dict[str, float] = {}
    codes, names = _iso_4217()
    with psycopg.connect(source_url) as source, psycopg.connect(target_url) as target:
        source.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        source.read_only = True
        started = time.monotonic()
        if incremental:
            watermarks = dict(target.execute(sql.SQL("SELECT table_name, watermark FROM {}").format(
                sql.Identifier(RAW, "_watermark"))).fetchall())
            target.execute(sql.SQL("TRUNCATE {}").format(
                sql.SQL(", ").join(sql.Identifier(STAGE, t) for t in TABLE_NAMES)))
        else:
            ensure_schema(target)
            create_raw_tables(target)
            watermarks = None
        # The snapshot starts with the first query: the watermarks below and the copies see the same data.
        new_marks = dict(source.execute(sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {}, max(last_updated) FROM {}").format(sql.Literal(t), sql.Identifier(t))
            for t in TABLE_NAMES)).fetchall())
        copied = copy_tables(source, target, STAGE if incremental else RAW, watermarks)
        source.commit()
        timings["copy_s"] = time.monotonic() - started
        started = time.monotonic()
        if incremental:
            for table in TABLE_NAMES:
                target.execute(sql.SQL("INSERT INTO {} SELECT * FROM {}").format(
                    sql.Identifier(RAW, table), sql.Identifier(STAGE, table)))
        inserted = {}
        for name, stmt in build_statements(incremental):
            params = {"iso_codes": codes, "iso_names": names} if "iso_4217_name" in _hows(name) else None
            with ExitStack() as levers:
                if name in FACTS and not incremental:
                    fact = TARGET_TABLES[name]
                    raw = sql.Identifier(RAW, fact.source)
                    levers.enter_context(memory_raised(target))
                    levers.enter_context(foreign_keys_validated_once(
                        target, fact, lambda: _check_references(target, fact, raw)))
                    levers.enter_context(indexes_built_after(
                        target, fact, lambda: _check_version_conflicts(target, fact, raw), keys=True))
                inserted[name] = target.execute(stmt, params).rowcount
        target.execute(
            sql.SQL("INSERT INTO {} SELECT * FROM unnest(%s::text[], %s::timestamp(3)[]) "
                    "ON CONFLICT (table_name) DO UPDATE SET watermark = greatest({}.watermark, EXCLUDED.watermark)"
                    ).format(sql.Identifier(RAW, "_watermark"), sql.Identifier(RAW, "_watermark")),
            (list(new_marks), [new_marks[t] if new_marks[t] is not None else (watermarks or {}).get(t)
                               for t in new_marks]))
        target.commit()
        timings["build_s"] = time.monotonic() - started
    return {"mode": mode, "rows_copied": sum(copied.values()), "copied": copied, "inserted": inserted, **timings}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, help="totesys database URL")
    parser.add_argument("--target", required=True, help="target database URL (raw copies + warehouse)")
    parser.add_argument("--mode", choices=("initial", "tick"), required=True)
    args = parser.parse_args(argv)
    try:
        print(json.dumps(run(args.source, args.target, args.mode), default=str))
    except psycopg.errors.UndefinedTable as err:
        print(f"floor {args.mode} into {redact_url(args.target)} failed: {err.diag.message_primary}; "
              + ("run --mode initial into this target first" if args.mode == "tick"
                 else "is the source a seeded totesys database?"), file=sys.stderr)
        return 1
    except psycopg.Error as err:
        print(f"floor {args.mode} from {redact_url(args.source)} to {redact_url(args.target)} failed: "
              f"{str(err).strip()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
