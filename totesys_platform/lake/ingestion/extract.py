"""Exactly-once incremental extraction of the totesys tables into the lake's ingestion zone.

Plain Python, no Dagster. docs/extraction.md explains the design; in short:

- A *version* is ``(primary key, last_updated)``. Every version visible at some run's snapshot is
  archived exactly once, in one Parquet file referenced by one manifest entry of its table.
- One run reads all its tables from one consistent snapshot: a read-only REPEATABLE READ transaction, whose
  snapshot the other reading connections import (`pg_export_snapshot`) when tables are read in parallel.
- A table's state lives in its latest manifest entry: the watermark (the largest last_updated ever
  read, taken from the data, never from a clock) and the versions already archived whose
  last_updated is within `lookback` of it. Each run reads ``last_updated >= watermark - lookback``
  and drops versions it has already archived, so ties at the watermark and rows committed late
  with an earlier last_updated (long transactions, clock skew) are archived once, provided the late
  commit is at most `lookback` behind the watermark.
- The data file is written first, the manifest entry last (exclusive create at seq + 1). A run that
  dies in between leaves an unreferenced file and no state change; the next run reads those rows again.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import queue
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable, Iterator, Sequence

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg import sql

from totesys_platform.lake.manifest import ConcurrentCommitError, ManifestEntry, TableLog, data_file_key
from totesys_platform.lake.store import AlreadyExistsError, LakeError, LakeStore
from totesys_platform.settings import redact_url
from totesys_platform.source import contract

SOURCE_SCHEMA = "public"
PREVIEW_ROWS = 5
# Bytes of COPY output parsed at a time; with one batch of rows, this bounds the extraction's memory.
CSV_BLOCK_BYTES = 1024 * 1024
STATE_FORMAT = 2  # 2 adds a content fingerprint to each remembered version (format 1 states still load)
# Anomalies named in an error message; the rest are counted.
ANOMALY_SAMPLE = 10
_EPOCH = datetime(1970, 1, 1)
_MS = timedelta(milliseconds=1)


class SourceError(RuntimeError):
    """The source cannot be extracted: unreachable, a table missing, schema drift, a value that does not
    convert. The message names the table and column and says what to do."""


class VersionOrderError(SourceError):
    """A row changed without last_updated moving forward: its change cannot be archived as a new version.

    Either the same (id, last_updated) was read again with different content, or a row came back with a
    last_updated earlier than a version of it already archived. Nothing was committed for the table."""


@dataclass(frozen=True)
class TableExtract:
    table: str
    rows: int  # versions archived by this run (0: nothing new, no file, no entry)
    entry: ManifestEntry | None  # the manifest entry committed, None if nothing new
    file_uri: str | None
    watermark_from: datetime | None  # the table's watermark before this run (None: first run)
    watermark_to: datetime | None  # after this run (None: nothing ever read)
    duplicates_skipped: int  # versions read again in the look-back window that were already archived
    preview: pa.Table  # the first <= 5 archived rows
    total_rows: int = 0  # versions archived for this table by all runs so far


# --------------------------------------------------------------------------------------------------
# Schema validation


_CATALOG_SQL = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       EXISTS (SELECT 1 FROM pg_index i
               WHERE i.indrelid = c.oid AND i.indisprimary AND i.indnatts = 1 AND i.indkey[0] = a.attnum)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND c.relname = ANY(%s)
ORDER BY c.relname, a.attnum
"""


def _contract_tables(tables: Sequence[str]) -> list[contract.SourceTable]:
    if isinstance(tables, str):
        raise TypeError("tables must be a sequence of table names, not one string")
    unknown = [t for t in tables if t not in contract.SOURCE_TABLES]
    if unknown:
        raise ValueError(
            f"not totesys contract tables: {', '.join(map(repr, unknown))}; "
            f"extraction reads only {', '.join(contract.TABLE_NAMES)}"
        )
    return [contract.SOURCE_TABLES[t] for t in dict.fromkeys(tables)]


def _nullability(nullable: bool) -> str:
    return "nullable" if nullable else "NOT NULL"


def validate_source_schema(conn: psycopg.Connection, tables: Sequence[str]) -> None:
    """Compare the live catalog with the contract; SourceError listing every difference, by table and column."""
    wanted = _contract_tables(tables)
    rows = conn.execute(_CATALOG_SQL, (SOURCE_SCHEMA, [t.name for t in wanted])).fetchall()
    live: dict[str, dict[str, tuple[str, bool, bool]]] = {}
    for table, column, pg_type, not_null, is_pk in rows:
        live.setdefault(table, {})[column] = (pg_type, not not_null, is_pk)

    problems = []
    for table in wanted:
        columns = live.get(table.name)
        if columns is None:
            problems.append(
                f"table {SOURCE_SCHEMA}.{table.name} is missing (or not visible to this user): restore it or grant "
                "access to it"
            )
            continue
        for col in table.columns:
            if col.name not in columns:
                problems.append(
                    f"{table.name}.{col.name}: column dropped or renamed (the contract expects {col.pg_type}, "
                    f"{_nullability(col.nullable)})"
                )
                continue
            pg_type, nullable, _ = columns[col.name]
            if pg_type != col.pg_type:
                problems.append(f"{table.name}.{col.name}: column retyped to {pg_type} (the contract says {col.pg_type})")
            if nullable != col.nullable:
                problems.append(
                    f"{table.name}.{col.name}: column is {_nullability(nullable)} in the source "
                    f"(the contract says {_nullability(col.nullable)})"
                )
        for name, (pg_type, _, _) in columns.items():
            if name not in table.column_names:
                problems.append(f"{table.name}.{name}: column added ({pg_type}), not in the contract")
        pk = table.primary_key
        if pk in columns and not columns[pk][2]:
            problems.append(f"{table.name}.{pk}: is not the table's primary key (the contract requires it)")
    if problems:
        raise SourceError(
            "the totesys source schema does not match the data contract; nothing was extracted:\n  - "
            + "\n  - ".join(problems)
            + "\nFix the source database, or change totesys_platform/source/contract.py (and the pipeline after it) "
            "to the new schema, then rerun."
        )


# --------------------------------------------------------------------------------------------------
# State kept in the manifest entry


def _to_ms(ts: datetime) -> int:
    return (ts - _EPOCH) // _MS


def _from_ms(ms: int) -> datetime:
    return _EPOCH + ms * _MS


def _iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds")


@dataclass
class _TableState:
    watermark: int | None = None  # epoch ms of the largest last_updated ever read
    window_start: int | None = None  # every archived version with last_updated >= this is in `versions`
    versions: set[tuple[int, int]] | None = None  # (pk, last_updated epoch ms)
    # Content fingerprint of remembered versions (format 2; empty for a format 1 state or other columns).
    fingerprints: dict[tuple[int, int], str] = field(default_factory=dict)

    @classmethod
    def from_entry(cls, log: TableLog, entry: ManifestEntry | None, columns: Sequence[str]) -> "_TableState":
        if entry is None:
            return cls(versions=set())
        state = entry.state
        try:
            watermark = datetime.fromisoformat(state["watermark"])
            window_start = datetime.fromisoformat(state["window_start"])
            versions, fingerprints = set(), {}
            same_columns = state.get("fingerprint_columns") == list(columns)
            for pk, ts, *fingerprint in state["versions"]:
                key = (int(pk), _to_ms(datetime.fromisoformat(ts)))
                versions.add(key)
                if fingerprint and same_columns:
                    fingerprints[key] = str(fingerprint[0])
        except (KeyError, TypeError, ValueError) as err:
            raise LakeError(
                f"{entry.table}: the extraction state in manifest {log.store.uri(log.entry_key(entry.seq))} is "
                f"unreadable ({type(err).__name__}: {err}); restore the manifest from a backup"
            ) from None
        return cls(_to_ms(watermark), _to_ms(window_start), versions, fingerprints)

    def to_json(self, columns: Sequence[str]) -> dict:
        def version(pk: int, ms: int) -> list:
            fingerprint = self.fingerprints.get((pk, ms))
            return [pk, _iso(_from_ms(ms))] + ([fingerprint] if fingerprint else [])

        return {
            "format": STATE_FORMAT,
            "watermark": _iso(_from_ms(self.watermark)),
            "window_start": _iso(_from_ms(self.window_start)),
            "fingerprint_columns": list(columns),
            "versions": [version(pk, ms) for pk, ms in sorted(self.versions, key=lambda v: (v[1], v[0]))],
        }


def _fingerprints(batch: pa.RecordBatch, rows: Sequence[int]) -> list[str]:
    """A short, stable digest of each row's values (the contract's Python values, so the same content gives
    the same digest in every run); only computed for the few rows in the look-back window."""
    columns = [column.take(pa.array(rows, pa.int64())).to_pylist() for column in batch.columns]
    return [hashlib.blake2b(repr(values).encode(), digest_size=8).hexdigest() for values in zip(*columns)]


class _Deduplicator:
    """Drops versions already archived, tracks the new watermark and the versions to remember, and finds
    rows whose last_updated did not move forward with their change (see VersionOrderError).

    Vectorised: only rows whose id the state remembers are looked at one by one (a handful on a tick,
    none on a first run); the rest is Arrow compute over each batch.
    """

    def __init__(self, table: contract.SourceTable, state: _TableState, lookback_ms: int, read_from_ms: int | None):
        self.pk_index = table.column_names.index(table.primary_key)
        self.lu_index = table.column_names.index("last_updated")
        self.seen = state.versions or set()
        self.seen_fingerprints = state.fingerprints
        # The latest remembered version of each id: this run must read that version again, or a later one.
        self.latest_seen: dict[int, int] = {}
        for pk, ms in self.seen:
            if read_from_ms is None or ms >= read_from_ms:
                self.latest_seen[pk] = max(ms, self.latest_seen.get(pk, ms))
        known = sorted({pk for pk, _ in self.seen})
        self.known_ids = pa.array(known, pa.int64()) if known else None
        self.read_again: set[int] = set()
        self.lookback_ms = lookback_ms
        self.max_ms = state.watermark
        # Rows that may end up in the look-back window (last_updated >= the running max - lookback); their
        # versions and fingerprints are taken in next_state, once the final watermark is known.
        self.window: list[pa.RecordBatch] = []
        self.window_rows = 0
        self.changed_in_place: list[tuple[int, int]] = []  # same (id, last_updated), other content
        self.moved_back: list[tuple[int, int, int]] = []  # (id, last_updated read, later version archived)
        self.rows = 0
        self.duplicates = 0
        self._prune_at = 10_000

    def filter(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        last_updated = batch.column(self.lu_index).cast(pa.int64())
        if self.known_ids is not None:
            rows = pc.indices_nonzero(pc.is_in(batch.column(self.pk_index), value_set=self.known_ids))
            if len(rows):
                ids = batch.column(self.pk_index).take(rows).to_pylist()
                keys = list(zip(ids, last_updated.take(rows).to_pylist()))
                self._find_moved_back(keys)
                repeated = [(i, key) for i, key in zip(rows.to_pylist(), keys) if key in self.seen]
                if repeated:
                    self.duplicates += len(repeated)
                    self._compare_fingerprints(batch, repeated)
                    keep = [True] * batch.num_rows
                    for i, _ in repeated:
                        keep[i] = False
                    mask = pa.array(keep)
                    batch, last_updated = batch.filter(mask), last_updated.filter(mask)
        if batch.num_rows:
            batch_max = pc.max(last_updated).as_py()
            self.max_ms = batch_max if self.max_ms is None else max(self.max_ms, batch_max)
            self._remember(batch, last_updated)
        self.rows += batch.num_rows
        return batch

    def _find_moved_back(self, keys: list[tuple[int, int]]) -> None:
        for pk, ms in keys:
            latest = self.latest_seen.get(pk)
            if latest is not None:
                self.read_again.add(pk)
                if ms < latest:
                    self.moved_back.append((pk, ms, latest))

    def _compare_fingerprints(self, batch: pa.RecordBatch, repeated: list[tuple[int, tuple[int, int]]]) -> None:
        rows = [(i, key) for i, key in repeated if key in self.seen_fingerprints]
        for (_, key), fingerprint in zip(rows, _fingerprints(batch, [i for i, _ in rows])):
            if fingerprint != self.seen_fingerprints[key]:
                self.changed_in_place.append(key)

    def _remember(self, batch: pa.RecordBatch, last_updated: pa.Array) -> None:
        # The final watermark is >= max_ms, so rows below max_ms - lookback will be forgotten anyway.
        floor = self.max_ms - self.lookback_ms
        near = pc.greater_equal(last_updated, floor)
        if pc.all(near).as_py():
            self.window.append(batch)
        elif pc.any(near).as_py():
            self.window.append(batch.filter(near))
        else:
            return
        self.window_rows += self.window[-1].num_rows
        if self.window_rows > self._prune_at:
            self.window = [kept for b in self.window if (kept := b.filter(pc.greater_equal(
                b.column(self.lu_index).cast(pa.int64()), floor))).num_rows]
            self.window_rows = sum(b.num_rows for b in self.window)
            self._prune_at = max(10_000, 2 * self.window_rows)

    def vanished(self) -> list[tuple[int, int]]:
        """Remembered ids this run did not read again at all: deleted in the source, or their last_updated
        moved back below the read window (the hourly source check names them; extraction only warns)."""
        return sorted((pk, ms) for pk, ms in self.latest_seen.items() if pk not in self.read_again)

    def next_state(self, read_from_ms: int | None) -> _TableState:
        window_start = self.max_ms - self.lookback_ms
        if read_from_ms is not None:
            window_start = max(window_start, read_from_ms)
        versions = {k for k in self.seen if k[1] >= window_start}
        fingerprints = {k: v for k, v in self.seen_fingerprints.items() if k in versions}
        for batch in self.window:
            last_updated = batch.column(self.lu_index).cast(pa.int64())
            rows = pc.indices_nonzero(pc.greater_equal(last_updated, window_start))
            keys = list(zip(batch.column(self.pk_index).take(rows).to_pylist(), last_updated.take(rows).to_pylist()))
            versions.update(keys)
            fingerprints.update(zip(keys, _fingerprints(batch, rows.to_pylist())))
        return _TableState(self.max_ms, window_start, versions, fingerprints)


def _version_order_error(table: contract.SourceTable, dedup: _Deduplicator) -> VersionOrderError:
    pk = table.primary_key
    problems = [
        f"{pk} {key} at last_updated {_iso(_from_ms(ms))} was archived before and is now different with the same "
        "last_updated (changed without moving last_updated)"
        for key, ms in dedup.changed_in_place[:ANOMALY_SAMPLE]
    ] + [
        f"{pk} {key} now has last_updated {_iso(_from_ms(ms))}, earlier than its version at {_iso(_from_ms(later))} "
        "already archived (last_updated moved backwards)"
        for key, ms, later in dedup.moved_back[:ANOMALY_SAMPLE]
    ]
    count = len(dedup.changed_in_place) + len(dedup.moved_back)
    more = f"\n  - ... and {count - len(problems)} more" if count > len(problems) else ""
    return VersionOrderError(
        f"{table.name}: {count} row(s) changed without last_updated moving forward, so the change cannot be "
        f"archived as a new version; nothing was committed for {table.name}:\n  - " + "\n  - ".join(problems) + more
        + f"\nAsk the totesys owners to set last_updated to the time of the change on these rows (UPDATE "
        f"{table.name} SET last_updated = now() WHERE {pk} IN (...)), and fix the writer; the next run archives them."
    )


# --------------------------------------------------------------------------------------------------
# COPY -> CSV -> Arrow


def _csv_options(table: contract.SourceTable):
    schema = table.arrow_schema
    read = pacsv.ReadOptions(column_names=schema.names, use_threads=False, block_size=2 * CSV_BLOCK_BYTES)
    # PostgreSQL CSV: quoted values may span lines; NULL is an unquoted empty field, '' is a quoted one.
    parse = pacsv.ParseOptions(newlines_in_values=True)
    convert = pacsv.ConvertOptions(
        column_types=schema,
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        true_values=["t"],
        false_values=["f"],
    )
    return read, parse, convert


_CSV_COLUMN = re.compile(r"CSV column #(\d+)")


def _conversion_error(table: contract.SourceTable, err: pa.ArrowException) -> SourceError:
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    match = _CSV_COLUMN.search(message)
    if match and int(match.group(1)) < len(table.columns):
        col = table.columns[int(match.group(1))]
        detail = message.split(": ", 1)[-1] if ": " in message else message
        detail = detail.split(": ", 1)[-1] if detail.startswith("Row #") else detail
        return SourceError(
            f"{table.name}.{col.name}: a source value does not convert to {col.arrow_type} ({detail}); nothing was "
            f"committed for {table.name}. Fix the value in the source, or the contract if the column's meaning "
            "changed, then rerun."
        )
    return SourceError(f"{table.name}: the COPY output could not be parsed ({message}); nothing was committed for it")


def _conform(table: contract.SourceTable, batch: pa.RecordBatch) -> pa.RecordBatch:
    schema = table.arrow_schema
    for field, column in zip(schema, batch.columns):
        if not field.nullable and column.null_count:
            raise SourceError(
                f"{table.name}.{field.name}: {column.null_count} NULL value(s) in a column the contract says is "
                f"NOT NULL; nothing was committed for {table.name}. Fix the source rows or the contract."
            )
    return pa.RecordBatch.from_arrays(batch.columns, schema=schema)


def _csv_blocks(copy: psycopg.Copy, block_bytes: int) -> Iterator[bytearray]:
    """The COPY output in blocks of about `block_bytes` that end on a row boundary.

    COPY TO sends one CopyData message per row and ``Copy.read()`` returns one message, so joining
    whole reads never splits a row (even one with a newline inside a quoted value).
    """
    block = bytearray()
    while row := copy.read():
        block += row
        if len(block) >= block_bytes:
            yield block
            block = bytearray()
    if block:
        yield block


def _csv_batches(copy: psycopg.Copy, table: contract.SourceTable) -> Iterator[pa.RecordBatch]:
    """The COPY stream as Arrow batches with the contract's exact types.

    Each row-aligned block is parsed by pyarrow.csv on this thread: no read-ahead thread touches the
    connection, and memory is one block plus its parsed batch, whatever the table's size.
    """
    read, parse, convert = _csv_options(table)
    for block in _csv_blocks(copy, CSV_BLOCK_BYTES):
        if len(block) >= read.block_size:
            # One row larger than the parser's block would "straddle" two of them: parse the block whole.
            read = pacsv.ReadOptions(column_names=read.column_names, use_threads=False, block_size=len(block) + 1)
        try:
            parsed = pacsv.read_csv(pa.py_buffer(block), read_options=read, parse_options=parse, convert_options=convert)
        except pa.ArrowException as err:
            raise _conversion_error(table, err) from None
        del block
        for batch in parsed.to_batches():
            yield _conform(table, batch)


def _rebatch(batches: Iterable[pa.RecordBatch], rows: int, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """Batches of exactly `rows` rows (the last one shorter), so Parquet row groups have a steady size."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        if not batch.num_rows:
            continue
        pending.append(batch)
        count += batch.num_rows
        while count >= rows:
            buffered = pa.Table.from_batches(pending, schema=schema)
            yield buffered.slice(0, rows).combine_chunks().to_batches()[0]
            rest = buffered.slice(rows)
            pending = rest.to_batches()
            count = rest.num_rows
    if count:
        yield pa.Table.from_batches(pending, schema=schema).combine_chunks().to_batches()[0]


# --------------------------------------------------------------------------------------------------
# The run


def _scrub(text: str, url: str) -> str:
    """Remove the URL's password from a driver message, in case the driver echoed connection details."""
    from urllib.parse import unquote, urlsplit

    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    for secret in filter(None, {password, password and unquote(password)}):
        text = text.replace(secret, "***")
    return text.replace(url, redact_url(url))


def _driver_message(err: BaseException, url: str) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return _scrub("; ".join(lines[:2]) or type(err).__name__, url)


def _connect(source_url: str, connect_timeout: float) -> psycopg.Connection:
    try:
        return psycopg.connect(
            source_url,
            connect_timeout=max(1, round(connect_timeout)),
            application_name="totesys_platform extract",
            client_encoding="UTF8",
        )
    except psycopg.Error as err:
        raise SourceError(
            f"cannot connect to the totesys source database {redact_url(source_url)}: {_driver_message(err, source_url)}. "
            "Check TOTESYS_DB_URL, that the server is running and reachable from here, and the credentials."
        ) from None


def _normalise_batch_ts(batch_ts: datetime | None) -> datetime:
    if batch_ts is None:
        return datetime.now(timezone.utc).replace(tzinfo=None)
    if batch_ts.tzinfo is not None:
        return batch_ts.astimezone(timezone.utc).replace(tzinfo=None)
    return batch_ts


def _copy_query(table: contract.SourceTable, filtered: bool) -> sql.Composed:
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in table.column_names)
    where = sql.SQL(" WHERE {} >= %s").format(sql.Identifier("last_updated")) if filtered else sql.SQL("")
    return sql.SQL("COPY (SELECT {columns} FROM {table}{where} ORDER BY {lu}, {pk}) TO STDOUT (FORMAT csv)").format(
        columns=columns,
        table=sql.Identifier(SOURCE_SCHEMA, table.name),
        where=where,
        lu=sql.Identifier("last_updated"),
        pk=sql.Identifier(table.primary_key),
    )


def _extract_table(
    conn: psycopg.Connection,
    store: LakeStore,
    log: TableLog,
    table: contract.SourceTable,
    previous: ManifestEntry | None,
    *,
    lookback: timedelta,
    batch_ts: datetime,
    batch_rows: int,
    source_url: str,
    snapshot: str,
    say: Callable[[str], None],
) -> TableExtract:
    state = _TableState.from_entry(log, previous, table.column_names)
    lookback_ms = lookback // _MS
    read_from = None
    if state.watermark is not None:
        # Never below window_start: versions under it are no longer remembered and would be archived twice.
        read_from = max(state.watermark - lookback_ms, state.window_start)
    dedup = _Deduplicator(table, state, lookback_ms, read_from)
    key = data_file_key(table.name, batch_ts)
    preview = table.arrow_schema.empty_table()
    written = None
    query = _copy_query(table, read_from is not None)
    params = (_from_ms(read_from),) if read_from is not None else None
    try:
        with conn.cursor() as cur, cur.copy(query, params) as copy:
            new = _rebatch((dedup.filter(b) for b in _csv_batches(copy, table)), batch_rows, table.arrow_schema)
            first = next(new, None)
            if first is not None:
                preview = pa.Table.from_batches([first.slice(0, PREVIEW_ROWS)])
                try:
                    written = store.write_parquet(key, itertools.chain([first], new), table.arrow_schema)
                except AlreadyExistsError:
                    raise LakeError(
                        f"{table.name}: data file {store.uri(key)} already exists: another extraction with the "
                        "same batch time wrote it (or failed after writing it). Nothing was committed for "
                        f"{table.name}; rerun with a new batch time."
                    ) from None
    except psycopg.Error as err:
        raise SourceError(
            f"reading {table.name} from {redact_url(source_url)} failed: {_driver_message(err, source_url)}; "
            f"nothing was committed for {table.name}"
        ) from None

    if dedup.changed_in_place or dedup.moved_back:
        if written is not None:
            store.delete(key)  # ours, never referenced: nothing of this table is committed
        raise _version_order_error(table, dedup)
    vanished = dedup.vanished()
    if vanished:
        say(
            f"WARNING {table.name}: {len(vanished)} id(s) archived in the look-back window were not read again "
            f"(deleted in the source, or last_updated moved backwards), e.g. {table.primary_key} "
            + ", ".join(f"{pk} (last archived at {_iso(_from_ms(ms))})" for pk, ms in vanished[:ANOMALY_SAMPLE])
            + "; the hourly source_matches_lake check reports every such row"
        )

    since = _iso(_from_ms(read_from)) if read_from is not None else "the beginning"
    watermark_from = _from_ms(state.watermark) if state.watermark is not None else None
    if written is None:  # reported with the other unchanged tables by extract_tables, in one line
        total = int(previous.state.get("total_rows", 0)) if previous else 0
        return TableExtract(table.name, 0, None, None, watermark_from, watermark_from, dedup.duplicates, preview, total)

    next_state = dedup.next_state(read_from)
    state_json = next_state.to_json(table.column_names) | {
        "read_from": _iso(_from_ms(read_from)) if read_from is not None else None,
        "lookback_seconds": lookback.total_seconds(),
        "batch_ts": batch_ts.isoformat(timespec="microseconds"),
        "snapshot": snapshot,
        "total_rows": (int(previous.state.get("total_rows", 0)) if previous else 0) + written.rows,
    }
    try:
        entry = log.commit(
            file=key, rows=written.rows, state=state_json, expected_prev_seq=previous.seq if previous else 0
        )
    except ConcurrentCommitError as err:
        store.delete(key)  # ours, never referenced: the rival run archived these versions
        raise ConcurrentCommitError(
            f"{table.name}: another extraction committed to {store.url} while this one ran ({err}); this run's file "
            "was discarded and nothing of it was committed. Do not run extractions in parallel; rerun to continue "
            "from the other run's state."
        ) from None
    say(
        f"{table.name}: archived {written.rows} new versions since {since} "
        f"({dedup.duplicates} already archived) to {written.uri}, manifest seq {entry.seq}"
    )
    return TableExtract(
        table=table.name,
        rows=written.rows,
        entry=entry,
        file_uri=written.uri,
        watermark_from=watermark_from,
        watermark_to=_from_ms(next_state.watermark),
        duplicates_skipped=dedup.duplicates,
        preview=preview,
        total_rows=state_json["total_rows"],
    )


def extract_tables(
    source_url: str,
    store: LakeStore,
    tables: Sequence[str] = contract.TABLE_NAMES,
    *,
    lookback: timedelta = timedelta(minutes=15),
    batch_ts: datetime | None = None,
    batch_rows: int = 100_000,
    log: Callable[[str], None] = lambda m: None,
    connect_timeout: float = 10,
    statement_timeout: timedelta = timedelta(minutes=30),
    connections: int = 2,
) -> dict[str, TableExtract]:
    """Archive every new version of `tables` from the source into `store`, all from one snapshot.

    With `connections` > 1, that many tables are read at once, the largest first, each reading connection
    importing the snapshot of the first one (`pg_export_snapshot`): every table still comes from the same
    snapshot. Each table commits on its own: if one fails, the tables already archived stay committed,
    no table is started after the failure, and the failure (the first in table order) is raised; a rerun
    continues from there. With 1, the tables are read one after the other in table order.
    """
    wanted = _contract_tables(tables)
    if lookback < timedelta(0):
        raise ValueError(f"lookback must not be negative, got {lookback}")
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be positive, got {batch_rows}")
    if connections < 1:
        raise ValueError(f"connections must be at least 1, got {connections}")
    batch_ts = _normalise_batch_ts(batch_ts)
    logs = {t.name: TableLog(store, t.name) for t in wanted}
    # The lake state is read before the snapshot is taken, so every state a run builds on comes from
    # a snapshot older than its own (see docs/extraction.md, "Concurrent runs").
    previous = {name: tl.latest() for name, tl in logs.items()}

    def extract(conn: psycopg.Connection, table: contract.SourceTable, say: Callable[[str], None]) -> TableExtract:
        return _extract_table(
            conn, store, logs[table.name], table, previous[table.name],
            lookback=lookback, batch_ts=batch_ts, batch_rows=batch_rows, source_url=source_url,
            snapshot=snapshot, say=say,
        )

    with _source_snapshot(source_url, wanted, connect_timeout, statement_timeout) as (conn, snapshot):
        log(f"Extracting {len(wanted)} tables from {redact_url(source_url)} (snapshot {snapshot}) to {store.url}")
        if connections == 1 or len(wanted) == 1:
            results = {table.name: extract(conn, table, log) for table in wanted}
        else:
            exported, largest_first = _export_snapshot(conn, wanted, source_url)
            reader = functools.partial(_snapshot_reader, source_url, exported, connect_timeout, statement_timeout)
            results = _extract_in_parallel(largest_first, extract, reader, min(connections, len(wanted)), log)
    unchanged = [results[t.name] for t in wanted if not results[t.name].rows]
    if unchanged:
        # One line, not one per table: each log line is an event the run storage writes.
        log(f"Nothing new in {', '.join(r.table for r in unchanged)} "
            f"({sum(r.duplicates_skipped for r in unchanged)} versions read again were already archived)")
    return {table.name: results[table.name] for table in wanted}


def _export_snapshot(conn: psycopg.Connection, tables: Sequence[contract.SourceTable],
                     source_url: str) -> tuple[str, list[contract.SourceTable]]:
    """The exported id of the connection's snapshot, and `tables` largest first (by the statistics' row
    counts: unlike pg_relation_size, reading them takes no lock, so a table locked by someone else holds up
    only its own read)."""
    try:
        exported = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        sizes = dict(conn.execute(
            "SELECT c.relname, greatest(c.reltuples, s.n_live_tup, 0) FROM pg_class AS c "
            "JOIN pg_namespace AS n ON n.oid = c.relnamespace LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid "
            "WHERE n.nspname = %s AND c.relname = ANY(%s)",
            (SOURCE_SCHEMA, [t.name for t in tables])).fetchall())
    except psycopg.Error as err:
        raise SourceError(
            f"cannot share the snapshot of {redact_url(source_url)} with more reading connections: "
            f"{_driver_message(err, source_url)}. Extract with one connection (connections: 1)"
        ) from None
    return exported, sorted(tables, key=lambda t: -sizes.get(t.name, 0))


def _extract_in_parallel(
    tables: Sequence[contract.SourceTable],
    extract: Callable[[psycopg.Connection, contract.SourceTable, Callable[[str], None]], TableExtract],
    reader: Callable[[], "contextlib.AbstractContextManager[psycopg.Connection]"],
    workers: int,
    log: Callable[[str], None],
) -> dict[str, TableExtract]:
    """Extract `tables` (in this order) on `workers` threads, each with its own `reader()` connection.

    psycopg and pyarrow release the GIL while waiting for rows, parsing CSV and writing Parquet, so two
    tables on two connections take less time than one after the other. Progress messages are passed to
    `log` on the calling thread. After a failure no table is started; the first failure in table order
    (or a reading connection's) is raised once the tables in flight are done.
    """
    pending: queue.SimpleQueue[contract.SourceTable] = queue.SimpleQueue()
    for table in tables:
        pending.put(table)
    messages: queue.SimpleQueue[str | None] = queue.SimpleQueue()
    results: dict[str, TableExtract] = {}
    errors: dict[str, BaseException] = {}
    failed = threading.Event()

    def work() -> None:
        try:
            with reader() as conn:
                while not failed.is_set():
                    try:
                        table = pending.get_nowait()
                    except queue.Empty:
                        return
                    try:
                        results[table.name] = extract(conn, table, messages.put)
                    except BaseException as err:  # noqa: BLE001 - raised on the calling thread below
                        errors[table.name] = err
                        failed.set()
        except BaseException as err:  # noqa: BLE001 - the reading connection could not be opened
            errors.setdefault("", err)
            failed.set()
        finally:
            messages.put(None)  # this worker is done

    threads = [threading.Thread(target=work, name=f"extract-{i}", daemon=True) for i in range(workers)]
    for thread in threads:
        thread.start()
    try:
        running = workers
        while running:
            message = messages.get()
            if message is None:
                running -= 1
            else:
                log(message)
    finally:
        failed.set()  # if the caller is interrupted, start no more tables
        for thread in threads:
            thread.join()
    for table in [t.name for t in contract.SOURCE_TABLES.values()] + [""]:
        if table in errors:
            raise errors[table]
    return results


def _session_settings(conn: psycopg.Connection, statement_timeout: timedelta) -> None:
    conn.execute("SET LOCAL DateStyle = ISO")
    conn.execute("SELECT set_config('statement_timeout', %s, true)", (str(statement_timeout // _MS),))


@contextmanager
def _read_only_transaction(source_url: str, connect_timeout: float) -> Iterator[psycopg.Connection]:
    """A new connection inside a read-only REPEATABLE READ transaction (one snapshot); closed on exit."""
    conn = _connect(source_url, connect_timeout)
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction():
            yield conn
    finally:
        conn.close()


@contextmanager
def _source_snapshot(source_url: str, tables: Sequence[contract.SourceTable], connect_timeout: float,
                     statement_timeout: timedelta) -> Iterator[tuple[psycopg.Connection, str]]:
    """A connection inside one read-only REPEATABLE READ transaction (one snapshot for every read), with ISO
    dates and the statement timeout set and `tables` validated against the contract; and the snapshot."""
    with _read_only_transaction(source_url, connect_timeout) as conn:
        try:
            _session_settings(conn, statement_timeout)
            validate_source_schema(conn, [t.name for t in tables])
            snapshot = conn.execute("SELECT pg_current_snapshot()::text").fetchone()[0]
        except psycopg.Error as err:
            raise SourceError(
                f"reading the schema of {redact_url(source_url)} failed: {_driver_message(err, source_url)}"
            ) from None
        yield conn, snapshot


@contextmanager
def _snapshot_reader(source_url: str, exported: str, connect_timeout: float,
                     statement_timeout: timedelta) -> Iterator[psycopg.Connection]:
    """Another connection in a read-only REPEATABLE READ transaction on the exported snapshot `exported`."""
    with _read_only_transaction(source_url, connect_timeout) as conn:
        try:
            # Before any other statement. The id comes from the server's pg_export_snapshot(); SET takes no
            # bound parameters.
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(exported)))
            _session_settings(conn, statement_timeout)
        except psycopg.Error as err:
            raise SourceError(
                f"cannot open another reading connection on the extraction's snapshot at "
                f"{redact_url(source_url)}: {_driver_message(err, source_url)}. Extract with one connection "
                "(connections: 1)"
            ) from None
        yield conn


def read_source_table(source_url: str, table_name: str, *, connect_timeout: float = 10,
                      statement_timeout: timedelta = timedelta(minutes=30)) -> pa.Table:
    """Every row of one contract table, with the contract's types, from one read-only snapshot (for the
    hourly reconciliation; extraction itself never holds a whole table)."""
    (table,) = _contract_tables([table_name])
    with _source_snapshot(source_url, [table], connect_timeout, statement_timeout) as (conn, _):
        try:
            with conn.cursor() as cur, cur.copy(_copy_query(table, False)) as copy:
                batches = list(_csv_batches(copy, table))
        except psycopg.Error as err:
            raise SourceError(
                f"reading {table.name} from {redact_url(source_url)} failed: {_driver_message(err, source_url)}"
            ) from None
    return pa.Table.from_batches(batches, schema=table.arrow_schema)


__all__ = ["SourceError", "TableExtract", "VersionOrderError", "extract_tables", "read_source_table",
           "validate_source_schema"]
