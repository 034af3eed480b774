"""What a stage hands to the lake for one table, and the one function that commits it (no Dagster).

The ingestion and processed assets return a `TableWrite` per table; the lake IO manager commits it with
`commit_write` (tests and the benchmark call the same function). Large batches travel as a `Spool`: an
Arrow IPC file on local disk, so memory stays bounded whatever the batch's size.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field

import pyarrow as pa

from totesys_platform.lake.delta import Commit, Snapshot

MODES = ("append", "merge", "overwrite")


class Spool:
    """Rows on their way to the lake, spooled to a local Arrow IPC file (LZ4-compressed)."""

    def __init__(self, schema: pa.Schema):
        self.schema = schema
        self._dir = tempfile.mkdtemp(prefix="lake-spool-")
        self.path = os.path.join(self._dir, "rows.arrow")
        self.rows = 0
        self._sink = pa.OSFile(self.path, "wb")
        self._writer = pa.ipc.new_file(self._sink, schema, options=pa.ipc.IpcWriteOptions(compression="lz4"))

    def write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def finish(self) -> "Spool":
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = None
        return self

    def reader(self) -> pa.RecordBatchReader:
        self.finish()
        source = pa.ipc.open_file(pa.memory_map(self.path))
        return pa.RecordBatchReader.from_batches(
            self.schema, (source.get_batch(i) for i in range(source.num_record_batches)))

    def read_all(self) -> pa.Table:
        self.finish()
        return pa.ipc.open_file(pa.memory_map(self.path)).read_all()

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = None
        shutil.rmtree(self._dir, ignore_errors=True)


@dataclass
class TableWrite:
    """One table's batch and the progress it makes, to commit together (`data` None: nothing to commit)."""

    read: Snapshot  # the table as the stage read it: a commit by another writer since then wins
    stage: str  # "extract" | "process" | ...: recorded with the progress
    state: dict  # the stage's progress after this batch (JSON-able)
    data: pa.Table | Spool | None
    rows: int = 0
    mode: str = "append"
    key: str | tuple[str, ...] | None = None  # the merge key, one column or several (mode "merge")
    evolve_schema: bool = False  # add columns the data has and the table does not
    properties: dict[str, str] = field(default_factory=dict)  # table properties, when the commit creates it

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.mode == "merge" and not self.key:
            raise ValueError("a merge needs its key column")

    @property
    def table(self) -> str:
        return self.read.table.name

    def discard(self) -> None:
        if isinstance(self.data, Spool):
            self.data.discard()


def commit_write(write: TableWrite) -> Commit | None:
    """Commit `write` to its lake table (append, merge or overwrite, with its progress); None if it holds no
    data. A spool is removed afterwards, committed or not."""
    if write.data is None:
        return None
    table = write.read.table
    try:
        if write.mode == "merge":
            data = write.data.read_all() if isinstance(write.data, Spool) else write.data
            return table.merge(data, write.key, read=write.read, stage=write.stage, state=write.state,
                               evolve_schema=write.evolve_schema)
        data = write.data.reader() if isinstance(write.data, Spool) else write.data
        return table.append(data, read=write.read, stage=write.stage, state=write.state, rows=write.rows,
                            evolve_schema=write.evolve_schema, properties=write.properties,
                            overwrite=write.mode == "overwrite")
    finally:
        write.discard()


__all__ = ["Spool", "TableWrite", "commit_write"]
