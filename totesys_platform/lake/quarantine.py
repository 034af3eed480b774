"""Quarantine of single source-row versions that hold bad input (plain logic, no Dagster).

The ingestion zone is write-once: a version the processed stage rejects (an unparseable date, an
unknown currency code...) would stop that table on every run. After correcting the row in totesys
(its new version is archived by the next run), an operator quarantines the bad version, identified
by its table, primary key and last_updated: processing then drops exactly that version and nothing
else of its batch, the fact-history check stops expecting it, and the archived rows themselves stay in
the lake, untouched.

The records are the Delta table ``_quarantine`` of the ingestion zone (table, id, last_updated, reason,
quarantined_at), which any engine can query beside the archive.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc

from totesys_platform.lake.delta import LakeZone
from totesys_platform.source.contract import SOURCE_TABLES

TABLE = "_quarantine"
STAGE = "quarantine"
SCHEMA = pa.schema([
    pa.field("table_name", pa.string(), nullable=False),
    pa.field("id", pa.int64(), nullable=False),
    pa.field("last_updated", pa.timestamp("us"), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("quarantined_at", pa.timestamp("us", tz="UTC"), nullable=False),
])


@dataclass(frozen=True)
class QuarantineRecord:
    table: str
    id: int
    last_updated: str
    reason: str
    quarantined_at: str


def _record(row: dict) -> QuarantineRecord:
    return QuarantineRecord(row["table_name"], row["id"], row["last_updated"].isoformat(sep=" ", timespec="milliseconds"),
                            row["reason"], row["quarantined_at"].isoformat(timespec="seconds"))


def quarantine_records(ingestion: LakeZone, table: str | None = None) -> list[QuarantineRecord]:
    rows = ingestion.table(TABLE).read()
    if rows is None:
        return []
    if table is not None:
        rows = rows.filter(pc.equal(rows["table_name"], table))
    return [_record(r) for r in rows.to_pylist()]


INT32 = (-(2**31), 2**31 - 1)  # the contract's ids are PostgreSQL integers


def _version(ingestion: LakeZone, table: str, id: int, last_updated: datetime) -> datetime:
    """The version's last_updated at the contract's precision, after checking the arguments name a version the
    ingestion zone holds (ValueError saying what is wrong otherwise)."""
    if table not in SOURCE_TABLES:
        raise ValueError(f"unknown totesys table {table!r}; expected one of {', '.join(SOURCE_TABLES)}")
    if last_updated.tzinfo is not None:
        raise ValueError("last_updated is naive (as in totesys): give it without a time zone")
    pk = SOURCE_TABLES[table].primary_key
    if not INT32[0] <= int(id) <= INT32[1]:
        raise ValueError(f"{pk} {id} is out of range: totesys ids are integers from {INT32[0]} to {INT32[1]}")
    stamp = last_updated.replace(microsecond=last_updated.microsecond // 1000 * 1000)
    archived = ingestion.table(table).read(columns=[pk, "last_updated"], filters=[(pk, "=", int(id))])
    held = [] if archived is None else archived.filter(pc.equal(archived[pk], int(id)))["last_updated"].to_pylist()
    if stamp not in held:
        versions = ", ".join(t.isoformat(sep=" ", timespec="milliseconds") for t in sorted(held)) or "none"
        raise ValueError(f"the ingestion zone {ingestion.url} holds no {table} version with {pk} {id} and "
                         f"last_updated {stamp.isoformat(sep=' ', timespec='milliseconds')} (its versions: {versions}); "
                         "give the values the processing error names")
    return stamp


def quarantine_version(ingestion: LakeZone, table: str, id: int, last_updated: datetime, reason: str) -> QuarantineRecord:
    """Quarantine version (id, last_updated) of a totesys table; idempotent (the first record stays)."""
    if not reason.strip():
        raise ValueError("give the reason for the quarantine (it is kept with the record)")
    stamp = _version(ingestion, table, id, last_updated)
    for record in quarantine_records(ingestion, table):
        if record.id == int(id) and record.last_updated == stamp.isoformat(sep=" ", timespec="milliseconds"):
            return record
    row = pa.table({"table_name": [table], "id": [int(id)], "last_updated": [stamp], "reason": [reason.strip()],
                    "quarantined_at": [datetime.now(timezone.utc)]}, schema=SCHEMA)
    target = ingestion.table(TABLE)
    target.append(row, read=target.snapshot(), stage=STAGE, state={}, rows=1)
    return _record(row.to_pylist()[0])


def release_version(ingestion: LakeZone, table: str, id: int, last_updated: datetime) -> bool:
    """Undo a quarantine: remove the record of version (id, last_updated); False if there was none. The
    processed tables that already dropped the version take it in only when rebuilt (docs/operations.md)."""
    stamp = _version(ingestion, table, id, last_updated)
    target = ingestion.table(TABLE)
    read = target.snapshot()
    rows = target.read(read)
    if rows is None:
        return False
    match = pc.and_(pc.and_(pc.equal(rows["table_name"], table), pc.equal(rows["id"], int(id))),
                    pc.equal(rows["last_updated"], pa.scalar(stamp, pa.timestamp("us"))))
    if not pc.any(match).as_py():
        return False
    kept = rows.filter(pc.invert(match)).cast(SCHEMA)
    target.append(kept, read=read, stage=STAGE, state={}, rows=kept.num_rows, overwrite=True)
    return True


def quarantined_versions(ingestion: LakeZone, table: str) -> pa.Table:
    """The quarantined (id, last_updated) versions of a table, as a two-column Arrow table."""
    pk = SOURCE_TABLES[table].primary_key
    rows = ingestion.table(TABLE).read(columns=["table_name", "id", "last_updated"])
    if rows is not None:
        rows = rows.filter(pc.equal(rows["table_name"], table))
    ids = rows["id"] if rows is not None else pa.array([], pa.int64())
    stamps = rows["last_updated"] if rows is not None else pa.array([], pa.timestamp("us"))
    return pa.table({pk: pc.cast(ids, pa.int32()), "last_updated": pc.cast(stamps, pa.timestamp("ms"))})


def drop_quarantined(rows: pa.Table, quarantined: pa.Table) -> pa.Table:
    """`rows` without the quarantined versions (same schema, same order)."""
    if quarantined.num_rows == 0 or rows.num_rows == 0:
        return rows
    pk = quarantined.column_names[0]
    keys = pc.binary_join_element_wise(
        pc.cast(rows[pk], pa.string()), pc.cast(pc.cast(rows["last_updated"], pa.int64()), pa.string()), "|")
    bad = pc.binary_join_element_wise(
        pc.cast(quarantined[pk], pa.string()), pc.cast(pc.cast(quarantined["last_updated"], pa.int64()), pa.string()), "|")
    return rows.filter(pc.invert(pc.is_in(keys, value_set=bad)))
