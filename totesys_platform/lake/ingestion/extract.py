"""Exactly-once incremental extraction of the totesys tables into the lake's ingestion zone.

Plain Python, no Dagster. docs/extraction.md explains the design; in short:

- A *version* is ``(primary key, last_updated)``. Every version visible at some run's snapshot is
  archived exactly once, in one commit of its table's Delta table in the ingestion zone.
- One run reads all its tables from one consistent snapshot: a read-only REPEATABLE READ transaction, whose
  snapshot the other reading connections import (`pg_export_snapshot`) when tables are read in parallel.
- A table's state is recorded in each of its commits: the watermark (the largest last_updated ever
  read, taken from the data, never from a clock) and the versions already archived whose
  last_updated is within `lookback` of it. Each run reads ``last_updated >= watermark - lookback``
  and drops versions it has already archived (see versions.py).
- A run only prepares each table's batch (rows spooled to local disk, the next state); the lake IO manager
  commits batch and state together in one Delta commit (`lake.writes.commit_write`). A run that dies before
  that commit leaves no trace in the table; the next run reads those rows again.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterator, Sequence

import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from totesys_platform.lake.delta import APPEND_ONLY, Commit, LakeZone, Snapshot
from totesys_platform.lake.ingestion.copy_arrow import copy_query, csv_batches, rebatch
from totesys_platform.lake.ingestion.late import LATE_CHUNK_ROWS, LateClassifier, SourceSnapshot
from totesys_platform.lake.ingestion import deletes
from totesys_platform.lake.ingestion.snapshots import export_snapshot, snapshot_reader, source_snapshot
from totesys_platform.lake.ingestion.source_schema import (
    LiveTable, SourceError, contract_tables, schema_error, validate_source_schema,
)
from totesys_platform.lake.ingestion.versions import (
    ANOMALY_SAMPLE, BATCH_COLUMN, MAX_REMEMBERED_VERSIONS, Deduplicator, OutOfOrderCaptures, TableState, from_ms, iso,
)
from totesys_platform.lake.writes import Spool, TableWrite, commit_write
from totesys_platform.connections import driver_message as _driver_message
from totesys_platform.redaction import redact_url
from totesys_platform.source import contract

PREVIEW_ROWS = 5
STAGE = "extract"
# Every archived row also carries the number of the extraction batch that archived it (the table's Delta
# application-transaction version: 1, 2, ...) and that batch's time (UTC): the order of captures.
EXTRACTED_AT_COLUMN = "_extracted_at"
# The extraction state's count of captures out of order (OutOfOrderCaptures) since the table began.
RECAPTURED_TOTAL = "recaptured_total"
# A tombstone (a row deleted in the source, see deletes.py) also carries when the deletion was seen.
ARCHIVE_COLUMNS = (pa.field(BATCH_COLUMN, pa.int64(), nullable=False),
                   pa.field(EXTRACTED_AT_COLUMN, pa.timestamp("us"), nullable=False),
                   pa.field(deletes.DELETED_AT_COLUMN, pa.timestamp("us"), nullable=True))


def archive_schema(table: contract.SourceTable) -> pa.Schema:
    """The ingestion table's columns: the source's, then the batch number and time, and when a tombstone's
    deletion was seen (NULL on every other row)."""
    return pa.schema([*table.arrow_schema, *ARCHIVE_COLUMNS])


@dataclass
class TableExtract:
    table: str
    rows: int  # versions archived by this batch (0: nothing new, nothing to commit)
    write: TableWrite  # the batch and the next state, for the lake IO manager to commit
    batch: int  # this batch's number (the previous one's + 1)
    watermark_from: datetime | None  # the table's watermark before this run (None: first run)
    watermark_to: datetime | None  # after this run (None: nothing ever read)
    duplicates_skipped: int  # versions read again in the look-back window that were already archived
    preview: pa.Table  # the first <= 5 archived rows
    total_rows: int = 0  # versions archived for this table by all batches, this one included
    added_columns: tuple[tuple[str, str], ...] = ()  # (column, PostgreSQL type) the source has beyond the contract
    out_of_order: OutOfOrderCaptures = OutOfOrderCaptures()  # rows captured although last_updated did not move forward
    late_rows: int = 0  # versions archived behind the look-back window (transactions open at the last snapshot)
    snapshot: str | None = None  # the source snapshot read (pg_current_snapshot(): xmin:xmax:in-progress ids)
    tombstones: int = 0  # rows deleted in the source, archived as tombstones by this batch
    commit: Commit | None = None  # set once the write is committed (by `extract_tables`; the IO manager's is in Dagster)


@dataclass
class Extraction:
    """One run over one snapshot: each table's prepared batch, or why the table failed. A failed table never
    stops the others (its reads are rolled back to a savepoint of the snapshot's transaction)."""

    results: dict[str, TableExtract]
    failures: dict[str, BaseException]

    def discard(self) -> None:
        for result in self.results.values():
            result.write.discard()

    def first_failure(self) -> BaseException | None:
        """The failure of the first failed table, in contract order."""
        return next((self.failures[t] for t in contract.TABLE_NAMES if t in self.failures), None)


# --------------------------------------------------------------------------------------------------
# The run


def _normalise_batch_ts(batch_ts: datetime | None) -> datetime:
    if batch_ts is None:
        return datetime.now(timezone.utc).replace(tzinfo=None)
    if batch_ts.tzinfo is not None:
        return batch_ts.astimezone(timezone.utc).replace(tzinfo=None)
    return batch_ts


def _with_batch_columns(batch: pa.RecordBatch, schema: pa.Schema, number: int, batch_ts: datetime,
                        deleted: bool = False) -> pa.RecordBatch:
    rows = batch.num_rows
    return pa.RecordBatch.from_arrays(
        [*batch.columns, pa.array([number] * rows, pa.int64()), pa.array([batch_ts] * rows, pa.timestamp("us")),
         pa.array([batch_ts if deleted else None] * rows, pa.timestamp("us"))],
        schema=schema)


def _extract_table(
    conn: psycopg.Connection,
    live: LiveTable,
    previous: Snapshot,
    *,
    lookback: timedelta,
    batch_ts: datetime,
    batch_rows: int,
    source_url: str,
    snapshot: str,
    say: Callable[[str], None],
    marker: str | None = None,
    max_deleted_share: float = deletes.DEFAULT_MAX_SHARE,
    remember_limit: int = MAX_REMEMBERED_VERSIONS,
    late_chunk_rows: int = LATE_CHUNK_ROWS,
) -> TableExtract:
    table = live.table
    where = f"{previous.table.uri} version {previous.version}"
    state = TableState.from_json(table.name, previous.state, table.column_names, where)
    lookback_ms = lookback // timedelta(milliseconds=1)
    read_from = None
    if state.watermark is not None:
        # Never below window_start: versions under it are no longer remembered and would be archived twice.
        read_from = max(state.watermark - lookback_ms, state.window_start)
    dedup = Deduplicator(table, state, lookback_ms, read_from, remember_limit)
    number = previous.txn_version + 1
    schema = archive_schema(table)
    preview = table.arrow_schema.empty_table()
    spool: Spool | None = None
    # Also the rows of transactions the last batch's snapshot could not see, however old their last_updated.
    last_seen = SourceSnapshot.parse(previous.state.get("snapshot")) if read_from is not None else None
    unseen, unseen_params = last_seen.unseen_rows() if last_seen is not None else (None, ())
    query = copy_query(table, read_from is not None, unseen)
    params = (from_ms(read_from), *unseen_params) if read_from is not None else None

    def in_window(batches):
        for b in batches:
            if last_seen is not None:
                behind = pc.less(b.column("last_updated").cast(pa.int64()), read_from)
                if pc.any(behind).as_py():
                    late.add(b.filter(behind))
                    b = b.filter(pc.invert(behind))
            yield dedup.filter(b)

    def archive(batch: pa.RecordBatch, deleted: bool = False) -> None:
        nonlocal spool, preview
        if spool is None:
            preview = pa.Table.from_batches([batch.slice(0, PREVIEW_ROWS)])
            spool = Spool(schema)
        spool.write(_with_batch_columns(batch, schema, number, batch_ts, deleted))

    def archive_rows(rows: pa.Table) -> None:
        for batch in rows.to_batches(batch_rows):
            archive(batch)

    # Rows behind the window (transactions the last batch's snapshot could not see), looked up chunk by chunk.
    late = LateClassifier(previous.table, previous, table, archive_rows, late_chunk_rows)
    gone = pa.array([], pa.int64())
    try:
        with conn.cursor() as cur, cur.copy(query, params) as copy:
            for batch in rebatch(in_window(csv_batches(copy, table)), batch_rows, table.arrow_schema):
                archive(batch)
        late.flush()
        if previous.exists and deletes.should_look(previous.state, marker):
            found = deletes.find_deletes(conn, table, previous.table, previous)
            found.refuse_mass(table, max_deleted_share)
            gone = found.ids
            if len(gone):
                for batch in deletes.tombstones(previous.table, previous, table, gone, batch_ts).to_batches(batch_rows):
                    archive(batch, deleted=True)
    except BaseException as err:
        if spool is not None:
            spool.discard()
        if isinstance(err, psycopg.Error):
            raise SourceError(
                f"reading {table.name} from {redact_url(source_url)} failed: {_driver_message(err, source_url)}; "
                f"nothing was committed for {table.name}"
            ) from None
        raise

    out_of_order = dedup.out_of_order()
    late.report(say)
    out_of_order = out_of_order + late.out_of_order()
    if out_of_order:
        say(f"WARNING {out_of_order.describe(table)}")
    if len(gone):
        say(f"WARNING {deletes.describe(table, gone)}")
    buried = set(gone.to_pylist())
    vanished = [v for v in dedup.vanished() if v[0] not in buried]
    if vanished:
        say(
            f"WARNING {table.name}: {len(vanished)} id(s) archived in the look-back window were not read again "
            f"(deleted in the source, or last_updated moved back below the window), e.g. {table.primary_key} "
            + ", ".join(f"{pk} (last archived at {iso(from_ms(ms))})" for pk, ms in vanished[:ANOMALY_SAMPLE])
            + "; the hourly source_matches_lake check reports every such row"
        )
    if live.added:
        say(f"{table.name}: archiving columns outside the contract: "
            + ", ".join(f"{name} ({pg_type})" for name, pg_type in live.added))

    since = iso(from_ms(read_from)) if read_from is not None else "the beginning"
    watermark_from = from_ms(state.watermark) if state.watermark is not None else None
    before = int(previous.state.get("total_rows", 0))
    if spool is None:  # reported with the other unchanged tables by extract_tables, in one line
        return TableExtract(
            table.name, 0, TableWrite(previous, STAGE, previous.state, None), previous.txn_version, watermark_from,
            watermark_from, dedup.duplicates, preview, before, live.added, out_of_order, snapshot=snapshot)

    next_state = dedup.next_state(read_from)
    if buried:  # forgotten: the same version inserted again is a new capture, alive again
        next_state.versions = {key for key in next_state.versions if key[0] not in buried}
        next_state.fingerprints = {key: f for key, f in next_state.fingerprints.items() if key[0] not in buried}
    state_json = next_state.to_json(table.column_names) | {
        "read_from": iso(from_ms(read_from)) if read_from is not None else None,
        "lookback_seconds": lookback.total_seconds(),
        "batch_ts": batch_ts.isoformat(timespec="microseconds"),
        "snapshot": snapshot,
        "total_rows": before + spool.rows,
        # Captures of versions out of order (tombstones included), ever: a processed table that consumed fewer
        # merges its rows by version.
        RECAPTURED_TOTAL: int(previous.state.get(RECAPTURED_TOTAL, 0)) + out_of_order.count + len(gone),
        deletes.TOMBSTONES_TOTAL: int(previous.state.get(deletes.TOMBSTONES_TOTAL, 0)) + len(gone),
        deletes.MARKER_KEY: marker,
    }
    say(f"{table.name}: {spool.rows} new versions since {since} ({dedup.duplicates} already archived), batch {number}")
    write = TableWrite(previous, STAGE, state_json, spool.finish(), rows=spool.rows, evolve_schema=True,
                       properties=dict(APPEND_ONLY))
    return TableExtract(
        table=table.name,
        rows=spool.rows,
        write=write,
        batch=number,
        watermark_from=watermark_from,
        watermark_to=from_ms(next_state.watermark),
        duplicates_skipped=dedup.duplicates,
        preview=preview,
        total_rows=before + spool.rows,
        added_columns=live.added,
        out_of_order=out_of_order,
        late_rows=late.archived,
        snapshot=snapshot,
        tombstones=len(gone),
    )


def stream_extraction(
    run: Extraction,
    source_url: str,
    zone: LakeZone,
    tables: Sequence[str] = contract.TABLE_NAMES,
    *,
    lookback: timedelta = timedelta(minutes=15),
    batch_ts: datetime | None = None,
    batch_rows: int = 100_000,
    log: Callable[[str], None] = lambda m: None,
    connect_timeout: float = 10,
    statement_timeout: timedelta = timedelta(minutes=30),
    connections: int = 2,
    max_deleted_share: float = deletes.DEFAULT_MAX_SHARE,
    remember_limit: int = MAX_REMEMBERED_VERSIONS,
    late_chunk_rows: int = LATE_CHUNK_ROWS,
) -> Iterator[TableExtract]:
    """Prepare the next batch of every table in `tables` from one snapshot of the source: its new versions
    (spooled) and its next state, as a `TableWrite` each, into `run`. Yields each table's result as soon as it is
    read, on the calling thread, while the other tables are still being read: the caller commits it meanwhile
    (the lake IO manager, or `extract_tables`). The last table read is yielded once the source's snapshot is
    released, so no commit holds the source's transaction open past the reads. Nothing is committed here: the
    caller discards what it did not commit (`Extraction.discard`); closing this generator early does that too,
    starts no further table and cancels the reads in flight.

    A table that fails (schema drift, a value that does not convert, a lock timeout...) is recorded in
    `run.failures` and the others go on. With `connections` > 1, that many tables are read at once, the largest
    first, each reading connection importing the snapshot of the first one (`pg_export_snapshot`): every table
    still comes from the same snapshot. With 1, the tables are read one after the other in table order.
    A table that lost more than `max_deleted_share` of its rows since its last batch fails (deletes.py).
    Raises only when the run cannot start (the source unreachable, its catalog unreadable). Once exhausted,
    `run.results` is in table order.
    """
    wanted = contract_tables(tables)
    if lookback < timedelta(0):
        raise ValueError(f"lookback must not be negative, got {lookback}")
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be positive, got {batch_rows}")
    if connections < 1:
        raise ValueError(f"connections must be at least 1, got {connections}")
    if not 0 <= max_deleted_share <= 1:
        raise ValueError(f"max_deleted_share must be between 0 and 1, got {max_deleted_share}")
    if remember_limit < 0 or late_chunk_rows < 1:
        raise ValueError(f"remember_limit must not be negative and late_chunk_rows must be positive, got "
                         f"{remember_limit} and {late_chunk_rows}")
    batch_ts = _normalise_batch_ts(batch_ts)
    from totesys_platform.lake.convert import refuse_unconverted  # (convert builds on this module)

    refuse_unconverted(zone)
    # The lake state is read before the snapshot is taken, so every state a run builds on comes from
    # a snapshot older than its own (see docs/extraction.md, "Concurrent runs"). A table committed while the
    # others are read is therefore never read back by this run.
    previous = {t.name: zone.table(t.name).snapshot() for t in wanted}

    def extract(conn: psycopg.Connection, live: LiveTable, say: Callable[[str], None]) -> TableExtract:
        # A savepoint: a table that fails rolls back its own reads and leaves the snapshot usable for the others.
        with conn.transaction():
            return _extract_table(
                conn, live, previous[live.name], lookback=lookback, batch_ts=batch_ts, batch_rows=batch_rows,
                source_url=source_url, snapshot=snapshot, say=say, marker=markers.get(live.name),
                max_deleted_share=max_deleted_share, remember_limit=remember_limit, late_chunk_rows=late_chunk_rows,
            )

    try:
        markers: dict[str, str] = {}

        def read_markers(conn: psycopg.Connection) -> None:
            markers.update(deletes.read_markers(conn, [t.name for t in wanted]))

        last: list[TableExtract] = []
        with source_snapshot(source_url, wanted, connect_timeout, statement_timeout, read_markers) as (
                conn, snapshot, live, bad):
            log(f"Extracting {len(wanted)} tables from {redact_url(source_url)} (snapshot {snapshot}) to {zone.url}")
            run.failures.update({t: schema_error(t, problems) for t, problems in bad.items()})
            readable = [live[t.name] for t in wanted if t.name in live]
            if connections == 1 or len(readable) <= 1:
                # Between two tables this session waits, idle in its transaction, while the run commits the first:
                # a server's shorter idle limit would end it and fail the tables not read yet.
                conn.execute("SELECT set_config('idle_in_transaction_session_timeout', %s, true)",
                             (str(statement_timeout // timedelta(milliseconds=1)),))
                results = _extract_in_order(readable, conn, extract, log, run)
            else:
                exported, largest_first = export_snapshot(conn, readable, source_url)
                reader = functools.partial(snapshot_reader, source_url, exported, connect_timeout, statement_timeout)
                results = _extract_in_parallel(largest_first, extract, reader, min(connections, len(readable)), log,
                                               run)
            with contextlib.closing(results):
                for result in results:
                    if len(run.results) + len(run.failures) < len(wanted):
                        yield result
                    else:  # the last table read: committed once the source's snapshot is released
                        last.append(result)
        yield from last
    except BaseException:  # GeneratorExit included: the caller stopped before taking every table
        run.discard()
        raise
    unchanged = [run.results[t.name] for t in wanted if t.name in run.results and not run.results[t.name].rows]
    if unchanged:
        # One line, not one per table: each log line is an event the run storage writes.
        log(f"Nothing new in {', '.join(r.table for r in unchanged)} "
            f"({sum(r.duplicates_skipped for r in unchanged)} versions read again were already archived)")
    for table, failure in run.failures.items():
        log(f"{table} FAILED: {failure}")
    run.results = {t.name: run.results[t.name] for t in wanted if t.name in run.results}


def prepare_extraction(source_url: str, zone: LakeZone, tables: Sequence[str] = contract.TABLE_NAMES,
                       **options) -> Extraction:
    """`stream_extraction` run to its end: every table's prepared batch (or failure), none committed."""
    run = Extraction({}, {})
    with contextlib.closing(stream_extraction(run, source_url, zone, tables, **options)) as batches:
        for _ in batches:
            pass
    return run


def extract_tables(source_url: str, zone: LakeZone, tables: Sequence[str] = contract.TABLE_NAMES,
                   **options) -> dict[str, TableExtract]:
    """Extract and commit: `stream_extraction`, committing each table's batch as soon as it is read (each on its
    own, as the IO manager does); then raise the first failure, if a table failed. For scripts, tests and
    benchmarks; the Dagster asset hands the writes to the lake IO manager instead."""
    run = Extraction({}, {})
    try:
        with contextlib.closing(stream_extraction(run, source_url, zone, tables, **options)) as batches:
            for result in batches:
                result.commit = commit_write(result.write)
    finally:
        run.discard()
    failure = run.first_failure()
    if failure is not None:
        raise failure
    return run.results


def _extract_in_order(tables: Sequence[LiveTable], conn: psycopg.Connection,
                      extract: Callable[[psycopg.Connection, LiveTable, Callable[[str], None]], TableExtract],
                      log: Callable[[str], None], run: Extraction) -> Iterator[TableExtract]:
    for position, table in enumerate(tables):
        try:
            run.results[table.name] = extract(conn, table, log)
        except Exception as err:  # noqa: BLE001 - recorded; the other tables go on
            run.failures[table.name] = err
            if conn.broken:  # the connection itself is gone: nothing else can be read on it
                run.failures.update({t.name: err for t in tables[position + 1:]})
                return
            continue
        yield run.results[table.name]


def _extract_in_parallel(
    tables: Sequence[LiveTable],
    extract: Callable[[psycopg.Connection, LiveTable, Callable[[str], None]], TableExtract],
    reader: Callable[[], "contextlib.AbstractContextManager[psycopg.Connection]"],
    workers: int,
    log: Callable[[str], None],
    run: Extraction,
) -> Iterator[TableExtract]:
    """Extract `tables` (in this order) on `workers` threads, each with its own `reader()` connection, into `run`,
    yielding each table's result on the calling thread as soon as it is read.

    psycopg and pyarrow release the GIL while waiting for rows, parsing CSV and spooling batches, so two
    tables on two connections take less time than one after the other, and the caller's commit of one table
    (delta-rs encodes and writes its files without the GIL) overlaps the reading of the next. Progress messages
    are passed to `log` on the calling thread. A table that fails is recorded and the others go on; a worker
    whose connection broke (or could not open) stops, and the tables nobody could read fail with its error.
    """
    pending: queue.SimpleQueue[LiveTable] = queue.SimpleQueue()
    for table in tables:
        pending.put(table)
    messages: queue.SimpleQueue[str | TableExtract | None] = queue.SimpleQueue()
    broken: list[BaseException] = []
    stop = threading.Event()
    reading: list[psycopg.Connection] = []

    def work() -> None:
        try:
            with reader() as conn:
                reading.append(conn)
                while not stop.is_set():
                    try:
                        table = pending.get_nowait()
                    except queue.Empty:
                        return
                    try:
                        run.results[table.name] = extract(conn, table, messages.put)
                        messages.put(run.results[table.name])
                    except Exception as err:  # noqa: BLE001 - recorded; the other tables go on
                        run.failures[table.name] = err
                        if conn.broken:
                            broken.append(err)
                            return
        except Exception as err:  # noqa: BLE001 - the reading connection could not be opened
            broken.append(err)
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
            elif isinstance(message, TableExtract):
                yield message
            else:
                log(message)
    finally:
        stop.set()  # if the caller is interrupted, start no more tables...
        for thread in threads:
            # ...and end the reads in flight (those tables fail, and are discarded); again while a thread goes on,
            # as a cancel that lands between two statements is ignored.
            while running and thread.is_alive():
                for conn in reading:
                    with contextlib.suppress(Exception):
                        conn.cancel_safe(timeout=5)
                thread.join(timeout=1)
            thread.join()
    for table in tables:
        if table.name not in run.results and table.name not in run.failures:
            run.failures[table.name] = broken[0] if broken else SourceError(f"{table.name} was not read")


__all__ = ["Extraction", "OutOfOrderCaptures", "SourceError", "TableExtract", "archive_schema", "extract_tables",
           "prepare_extraction", "stream_extraction", "validate_source_schema"]
