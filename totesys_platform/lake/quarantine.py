"""Quarantine of single source-row versions that hold bad input (plain logic, no Dagster).

The ingestion zone is write-once: a version the processed stage rejects (an unparseable date, an
unknown currency code...) would stop that table on every run. After correcting the row in totesys
(its new version is archived by the next run), an operator quarantines the bad version, identified
by its table, primary key and last_updated: processing then drops exactly that version and nothing
else of its batch, the fact-history check stops expecting it, and the archived batch itself stays in
the lake, untouched, with the reason recorded beside it.

Layout in the ingestion zone: ``_quarantine/<table>/<id>_<last_updated epoch ms>.json`` (write-once).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.compute as pc

from totesys_platform.lake.store import AlreadyExistsError, LakeStore
from totesys_platform.source.contract import SOURCE_TABLES

PREFIX = "_quarantine"
_ENTRY = re.compile(r"/(\d+)_(-?\d+)\.json$")
_EPOCH = datetime(1970, 1, 1)


@dataclass(frozen=True)
class QuarantineRecord:
    table: str
    id: int
    last_updated: str
    reason: str
    quarantined_at: str


def _ms(ts: datetime) -> int:
    return (ts - _EPOCH) // timedelta(milliseconds=1)


def quarantine_version(ingestion: LakeStore, table: str, id: int, last_updated: datetime, reason: str) -> QuarantineRecord:
    """Quarantine version (id, last_updated) of a totesys table; idempotent."""
    if table not in SOURCE_TABLES:
        raise ValueError(f"unknown totesys table {table!r}; expected one of {', '.join(SOURCE_TABLES)}")
    if not reason.strip():
        raise ValueError("give the reason for the quarantine (it is kept with the record)")
    if last_updated.tzinfo is not None:
        raise ValueError("last_updated is naive (as in totesys): give it without a time zone")
    record = QuarantineRecord(
        table, int(id), last_updated.isoformat(sep=" ", timespec="milliseconds"), reason.strip(),
        datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    try:
        ingestion.write_bytes(f"{PREFIX}/{table}/{int(id)}_{_ms(last_updated)}.json",
                              json.dumps(asdict(record)).encode(), exclusive=True)
    except AlreadyExistsError:
        pass
    return record


def quarantined_versions(ingestion: LakeStore, table: str) -> pa.Table:
    """The quarantined (id, last_updated) versions of a table, as a two-column Arrow table."""
    pk = SOURCE_TABLES[table].primary_key
    ids, stamps = [], []
    for key in ingestion.list_keys(f"{PREFIX}/{table}/"):
        if m := _ENTRY.search(key):
            ids.append(int(m.group(1)))
            stamps.append(int(m.group(2)))
    return pa.table({pk: pa.array(ids, pa.int32()),
                     "last_updated": pa.array(stamps, pa.int64()).cast(pa.timestamp("ms"))})


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
