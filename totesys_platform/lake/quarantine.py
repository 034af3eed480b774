"""Quarantine of ingestion batches that hold bad input (plain logic, no Dagster).

The ingestion zone is write-once: a batch with a row the processed stage rejects (an unparseable date,
an unknown currency code...) would stop that table on every run. After correcting the row in totesys
(its new version is archived in a later batch), an operator quarantines the bad batch: processing then
skips it, the fact-history check stops expecting its versions, and the batch itself stays in the lake,
untouched, with the reason recorded beside it.

Layout in the ingestion zone: ``_quarantine/<table>/<seq:010d>.json`` (write-once).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from totesys_platform.lake.manifest import TableLog
from totesys_platform.lake.store import AlreadyExistsError, LakeStore
from totesys_platform.source.contract import SOURCE_TABLES

PREFIX = "_quarantine"
_ENTRY = re.compile(r"(\d{10})\.json$")


@dataclass(frozen=True)
class QuarantineRecord:
    table: str
    seq: int
    reason: str
    quarantined_at: str


def quarantine_batch(ingestion: LakeStore, table: str, seq: int, reason: str) -> QuarantineRecord:
    """Mark ingestion batch `seq` of `table` as quarantined; idempotent for the same batch."""
    if table not in SOURCE_TABLES:
        raise ValueError(f"unknown totesys table {table!r}; expected one of {', '.join(SOURCE_TABLES)}")
    if not reason.strip():
        raise ValueError("give the reason for the quarantine (it is kept with the record)")
    if not any(e.seq == seq for e in TableLog(ingestion, table).entries(after_seq=seq - 1)[:1]):
        raise ValueError(f"{table} has no ingestion batch with seq {seq}; see the run's error for the batch to quarantine")
    record = QuarantineRecord(table, seq, reason.strip(), datetime.now(timezone.utc).isoformat(timespec="seconds"))
    try:
        ingestion.write_bytes(f"{PREFIX}/{table}/{seq:010d}.json", json.dumps(record.__dict__).encode(), exclusive=True)
    except AlreadyExistsError:
        pass
    return record


def quarantined_seqs(ingestion: LakeStore, table: str) -> set[int]:
    """The seqs of `table`'s quarantined ingestion batches."""
    return {int(m.group(1)) for key in ingestion.list_keys(f"{PREFIX}/{table}/") if (m := _ENTRY.search(key))}
