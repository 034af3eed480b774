"""Convert a lake written before the move to Delta Lake (Parquet batches + `_manifests/` commit logs) once,
without re-extracting, losing or duplicating a version (plain logic, no Dagster).

The ingestion zone is the record: each table's committed batches (its manifest entries, in order) become one
Delta commit holding every archived version, each with its batch number (the entry's seq) and time, and the
latest entry's extraction state, which has the same format. The application-transaction version is the last
seq, so the next extraction is batch seq + 1 and reads from exactly where the old code stopped. Quarantine
records become rows of `_quarantine`. The processed zone needs no conversion: it is derived, and the processed
assets build it again from the converted ingestion zone (the warehouse's merges ignore what they already have).

Each table converts in one commit, so a conversion stopped halfway resumes table by table. When every table is
done, `_manifests/_converted` marks the zone. The old files stay where they are (untracked by the Delta tables;
the maintenance's vacuum removes them after its retention); `_manifests/` stays as the record of the old log.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from totesys_platform.lake.delta import APPEND_ONLY, LakeZone
from totesys_platform.lake.ingestion.deletes import DELETED_AT_COLUMN
from totesys_platform.lake.ingestion.extract import BATCH_COLUMN, EXTRACTED_AT_COLUMN, STAGE, archive_schema
from totesys_platform.lake.quarantine import SCHEMA as QUARANTINE_SCHEMA, TABLE as QUARANTINE_TABLE
from totesys_platform.lake.store import LakeError
from totesys_platform.lake.writes import Spool
from totesys_platform.source.contract import SOURCE_TABLES

MANIFESTS = "_manifests"
MARKER = f"{MANIFESTS}/_converted"
_ENTRY = re.compile(r"^(\d{10})\.json$")
_QUARANTINE = re.compile(r"^_quarantine/([a-z_]+)/(\d+)_(-?\d+)\.json$")


class UnconvertedLakeError(LakeError):
    """The zone still holds a lake in the manifest layout: run the conversion before anything else."""


@dataclass
class ConversionReport:
    converted: dict[str, int] = field(default_factory=dict)  # table -> versions converted
    already: list[str] = field(default_factory=list)  # tables converted before
    quarantined: int = 0

    @property
    def nothing_to_do(self) -> bool:
        return not self.converted and not self.already


def needs_conversion(zone: LakeZone) -> bool:
    """True if the zone has manifest commit logs that were not converted yet (one listing, one lookup)."""
    if zone.objects.exists(MARKER):
        return False
    return next(iter(zone.objects.list_keys(f"{MANIFESTS}/")), None) is not None


def refuse_unconverted(zone: LakeZone) -> None:
    """UnconvertedLakeError if the zone must be converted first: extracting into it would start a new archive
    beside the old one and archive every version a second time."""
    if needs_conversion(zone):
        raise UnconvertedLakeError(
            f"the ingestion zone {zone.url} holds a lake in the earlier manifest format; convert it once, without "
            "re-extracting anything: totesys-platform lake convert (make run does it on start)")


def _entries(zone: LakeZone, table: str) -> list[dict]:
    seqs = sorted(int(m.group(1)) for key in zone.objects.list_keys(f"{MANIFESTS}/{table}/")
                  if (m := _ENTRY.match(key.rsplit("/", 1)[-1])))
    entries = []
    for expected, seq in enumerate(seqs, start=1):
        if seq != expected:
            raise LakeError(f"{table}: manifest entry {expected} is missing from {zone.objects.uri(MANIFESTS)}; "
                            "restore it from a backup before converting")
        try:
            entries.append(json.loads(zone.objects.read_bytes(f"{MANIFESTS}/{table}/{seq:010d}.json")))
        except ValueError as err:
            raise LakeError(f"{table}: manifest entry {seq} is not valid JSON ({err}); restore it from a backup") from None
    return entries


def _batch_time(entry: dict) -> datetime:
    stamp = (entry.get("state") or {}).get("batch_ts") or entry["committed_at"]
    value = datetime.fromisoformat(stamp)  # batch_ts is naive UTC; committed_at carries its offset
    return value if value.tzinfo is None else value.astimezone(timezone.utc).replace(tzinfo=None)


def _convert_table(zone: LakeZone, table: str, say: Callable[[str], None]) -> int:
    entries = _entries(zone, table)
    if not entries:
        return 0
    schema = archive_schema(SOURCE_TABLES[table])
    spool = Spool(schema)
    try:
        for entry in entries:
            if not entry.get("file"):
                continue
            try:
                rows = pq.read_table(io.BytesIO(zone.objects.read_bytes(entry["file"])))
            except FileNotFoundError:
                raise LakeError(f"{table}: manifest entry {entry['seq']} references {entry['file']}, which is missing; "
                                "restore it from a backup before converting") from None
            contract = SOURCE_TABLES[table].arrow_schema
            rows = rows.select(contract.names).cast(contract)
            count = rows.num_rows
            rows = rows.append_column(BATCH_COLUMN, pa.array([entry["seq"]] * count, pa.int64()))
            rows = rows.append_column(EXTRACTED_AT_COLUMN, pa.array([_batch_time(entry)] * count, pa.timestamp("us")))
            rows = rows.append_column(DELETED_AT_COLUMN, pa.nulls(count, pa.timestamp("us")))  # no tombstones then
            for batch in rows.cast(schema).to_batches():
                spool.write(batch)
        target = zone.table(table)
        last = entries[-1]
        target.append(spool.reader(), read=target.snapshot(), stage=STAGE, state=last.get("state") or {},
                      rows=spool.rows, properties=dict(APPEND_ONLY), txn=int(last["seq"]))
    finally:
        spool.discard()
    say(f"{table}: {spool.rows} archived versions from {len(entries)} batches converted")
    return spool.rows


def _convert_quarantine(zone: LakeZone) -> int:
    records = []
    for key in zone.objects.list_keys("_quarantine/"):
        if _QUARANTINE.match(key):
            body = json.loads(zone.objects.read_bytes(key))
            records.append({
                "table_name": body["table"], "id": int(body["id"]),
                "last_updated": datetime.fromisoformat(body["last_updated"]), "reason": body["reason"],
                "quarantined_at": datetime.fromisoformat(body["quarantined_at"]),
            })
    target = zone.table(QUARANTINE_TABLE)
    if not records or target.snapshot().exists:
        return 0
    target.append(pa.Table.from_pylist(records, schema=QUARANTINE_SCHEMA), read=target.snapshot(), stage="quarantine",
                  state={}, rows=len(records))
    return len(records)


def convert_ingestion_zone(zone: LakeZone, *, say: Callable[[str], None] = lambda m: None) -> ConversionReport:
    """Convert every table of a manifest-layout ingestion zone that is not converted yet; idempotent."""
    report = ConversionReport()
    if not needs_conversion(zone):
        return report
    for table in SOURCE_TABLES:
        if zone.table(table).snapshot().exists:
            report.already.append(table)
            continue
        versions = _convert_table(zone, table, say)
        if versions:
            report.converted[table] = versions
    report.quarantined = _convert_quarantine(zone)
    zone.objects.write_bytes(MARKER, json.dumps({"converted": report.converted}).encode(), exclusive=False)
    say(f"converted {zone.url}: {sum(report.converted.values())} versions in {len(report.converted)} tables, "
        f"{report.quarantined} quarantine records; the processed zone is built again from it by the next run")
    return report


__all__ = ["ConversionReport", "UnconvertedLakeError", "convert_ingestion_zone", "needs_conversion",
           "refuse_unconverted"]
