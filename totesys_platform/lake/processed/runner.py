"""Incremental processing of one processed-zone table: plain logic, no Dagster.

Each processed table keeps its own position in the lake, in its manifest entry's state:
which ingestion manifest entry of each input it has consumed (its seq and commit id, so a lost or
restored ingestion zone is noticed and the table rebuilt), and where its small builder state
(reference rows, the dim_date range) is stored. A run reads only the ingestion batches committed
since, so its cost follows the size of the change, not the size of history. The delta file and the
state files are written first, the manifest entry last: a run that fails leaves the table as it was.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc

from totesys_platform.lake.manifest import ManifestEntry, TableLog, data_file_key
from totesys_platform.lake.quarantine import drop_quarantined, quarantined_versions
from totesys_platform.lake.processed.transforms import PROCESSED_SPECS, ProcessedSpec
from totesys_platform.lake.processed.validation import BadInputError
from totesys_platform.lake.store import LakeStore
from totesys_platform.source.contract import SOURCE_TABLES
from totesys_platform.star_schema import TARGET_TABLES


@dataclass(frozen=True)
class ProcessResult:
    table: str
    rows: int
    entry: ManifestEntry | None
    file_uri: str | None
    consumed: dict[str, int]
    input_rows: dict[str, int] = field(default_factory=dict)
    total_rows: int = 0  # rows in all the table's batches (a dimension's batches may repeat a key)

    @property
    def changed(self) -> bool:
        return self.entry is not None


def read_new_batches(ingestion: LakeStore, source_table: str, after_seq: int) -> tuple[list[tuple[int, pa.Table]], int]:
    """The ingestion batches of `source_table` committed after `after_seq` as (seq, rows), and the last seq read.

    Quarantined versions are dropped (see lake/quarantine.py).
    """
    log = TableLog(ingestion, source_table)
    schema = SOURCE_TABLES[source_table].arrow_schema
    entries = log.entries(after_seq=after_seq)
    quarantined = quarantined_versions(ingestion, source_table) if entries else None
    batches = [(e.seq, drop_quarantined(log.read(e).select(schema.names).cast(schema), quarantined))
               for e in entries if e.file]
    return batches, (entries[-1].seq if entries else after_seq)


def read_new_input(ingestion: LakeStore, source_table: str, after_seq: int) -> tuple[pa.Table, int]:
    """All ingestion rows of `source_table` committed after `after_seq`, in order, and the last seq read."""
    batches, last = read_new_batches(ingestion, source_table, after_seq)
    schema = SOURCE_TABLES[source_table].arrow_schema
    return (pa.concat_tables([t for _, t in batches]) if batches else schema.empty_table()), last


def _versions_holding(batches: list[tuple[int, pa.Table]], key: str | None) -> list[tuple[str, str]]:
    """(column, last_updated) of the rows named by a BadInputError key such as ``sales_order_id=42``."""
    if not key or "=" not in key:
        return []
    column, _, value = key.partition("=")
    if not value.isdigit():
        return []
    found = []
    for _, t in batches:
        if column in t.column_names:
            rows = t.filter(pc.equal(t[column], int(value)))
            found += [(value, ts.isoformat(sep=" ", timespec="milliseconds")) for ts in rows["last_updated"].to_pylist()]
    return found


def _with_quarantine_hint(err: BadInputError, batches: dict[str, list[tuple[int, pa.Table]]]) -> BadInputError:
    source = err.source if err.source in batches else next(iter(batches), None)
    versions = _versions_holding(batches.get(source, []), err.key) if source else []
    if not versions:
        return err
    id_, last_updated = versions[-1]
    hint = (
        f"After correcting the row in totesys, quarantine the bad version: totesys-platform lake quarantine "
        f"--table {source} --id {id_} --last-updated '{last_updated}' --reason '...'"
    )
    return BadInputError(err.table, err.key, err.column, err.reason, source=err.source,
                         action=f"{err.action}. {hint}" if err.action else hint)


def _commit_id(ingestion: LakeStore, source_table: str, seq: int) -> str | None:
    """The commit id of ingestion entry `seq` of `source_table`; None if there is no such entry."""
    try:
        body = json.loads(ingestion.read_bytes(TableLog(ingestion, source_table).entry_key(seq)))
    except (FileNotFoundError, ValueError):
        return None  # gone, or unreadable (reading the zone again then names the broken entry)
    return str(body.get("commit_id") or "") or None if isinstance(body, dict) else None


def _position_lost(ingestion: LakeStore, source_table: str, seq: int, commit_id: str | None) -> bool:
    """True if ingestion entry `seq`, consumed last, is no longer the commit it was (or no longer exists)."""
    if seq <= 0:
        return False
    if commit_id:
        return _commit_id(ingestion, source_table, seq) != commit_id
    # A state written before commit ids were recorded: only a zone that ends below `seq` can be told.
    return seq > TableLog(ingestion, source_table).latest_seq()


def _state_key(table: str, seq: int, name: str, batch_ts: datetime) -> str:
    # The attempt's batch time is part of the key: an attempt that died after writing its state files and
    # before its commit leaves them unreferenced, and the next attempt at the same seq must not collide.
    return f"_state/{table}/{seq:010d}/{name}_{batch_ts:%Y%m%dT%H%M%S%f}.parquet"


def _read_state(store: LakeStore, state_files: dict[str, str]) -> dict[str, pa.Table]:
    return {name: store.read_parquet(key) for name, key in state_files.items()}


def process_table(
    name: str,
    ingestion: LakeStore,
    processed: LakeStore,
    *,
    batch_ts: datetime | None = None,
    spec: ProcessedSpec | None = None,
) -> ProcessResult:
    """Bring processed table `name` up to date with the ingestion zone; returns what it added."""
    spec = spec or PROCESSED_SPECS[name]
    log = TableLog(processed, name)
    latest = log.latest()
    prev_state = latest.state if latest else {}
    consumed: dict[str, int] = dict(prev_state.get("consumed", {}))
    consumed_commits: dict[str, str] = dict(prev_state.get("consumed_commits", {}))
    total_rows = int(prev_state.get("total_rows", 0))
    state_files: dict[str, str] = dict(prev_state.get("state_files", {}))
    if any(_position_lost(ingestion, s, consumed.get(s, 0), consumed_commits.get(s)) for s in spec.inputs):
        # The ingestion zone no longer holds the batch this table consumed last: it was lost and extracted
        # again, or restored from an older copy. Reading "after consumed" would silently skip what it now
        # holds, so the table is rebuilt from all of it (the warehouse merges ignore what they already have).
        consumed, consumed_commits, state_files = {}, {}, {}

    batches: dict[str, list[tuple[int, pa.Table]]] = {}
    inputs: dict[str, pa.Table] = {}
    new_consumed: dict[str, int] = {}
    for source in spec.inputs:
        batches[source], new_consumed[source] = read_new_batches(ingestion, source, consumed.get(source, 0))
        parts = [t for _, t in batches[source]]
        inputs[source] = pa.concat_tables(parts) if parts else SOURCE_TABLES[source].arrow_schema.empty_table()
    input_rows = {k: v.num_rows for k, v in inputs.items()}
    if new_consumed == {s: consumed.get(s, 0) for s in spec.inputs}:
        return ProcessResult(name, 0, None, None, new_consumed, input_rows, total_rows)

    try:
        old_state = _read_state(processed, state_files)
        delta, new_state = spec.build(inputs, old_state)
    except BadInputError as err:
        raise _with_quarantine_hint(err, batches) from None
    expected = TARGET_TABLES[name].arrow_schema
    if not delta.schema.equals(expected):
        raise TypeError(f"{name}: the builder returned {delta.schema}, expected {expected}")

    seq = (latest.seq if latest else 0) + 1
    batch_ts = batch_ts or datetime.now(timezone.utc)
    file_key = None
    file_uri = None
    if delta.num_rows:
        file_key = data_file_key(name, batch_ts)
        written = processed.write_parquet(file_key, delta.to_batches(), expected)
        file_uri = written.uri
    new_state_files: dict[str, str] = {}
    for state_name, table in new_state.items():
        old_key = state_files.get(state_name)
        if old_key and old_state[state_name].equals(table):
            new_state_files[state_name] = old_key
            continue
        key = _state_key(name, seq, state_name, batch_ts)
        processed.write_parquet(key, table.to_batches(), table.schema)
        new_state_files[state_name] = key
    new_commits = {
        source: consumed_commits[source] if seq == consumed.get(source) and source in consumed_commits
        else _commit_id(ingestion, source, seq)
        for source, seq in new_consumed.items() if seq
    }
    entry = log.commit(
        file=file_key,
        rows=delta.num_rows,
        state={"consumed": new_consumed, "consumed_commits": new_commits, "state_files": new_state_files,
               "total_rows": total_rows + delta.num_rows},
        expected_prev_seq=latest.seq if latest else 0,
    )
    return ProcessResult(name, delta.num_rows, entry, file_uri, new_consumed, input_rows, total_rows + delta.num_rows)


def read_processed(processed: LakeStore, name: str, after_seq: int = 0) -> tuple[pa.Table, int]:
    """The processed batches of `name` committed after `after_seq`, concatenated, and the last seq read."""
    log = TableLog(processed, name)
    schema = TARGET_TABLES[name].arrow_schema
    entries = log.entries(after_seq=after_seq)
    tables = [log.read(e).cast(schema) for e in entries if e.file]
    last = entries[-1].seq if entries else after_seq
    return (pa.concat_tables(tables) if tables else schema.empty_table()), last
