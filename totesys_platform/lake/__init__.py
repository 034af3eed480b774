"""The data lake: Delta Lake tables in a folder or S3 prefix per zone (`delta`), what a stage hands to it
(`writes`), and plain objects beside the tables (`store`). No Dagster here: the lake IO manager is in
totesys_platform/defs/lake_io_manager.py."""

import os

# delta-rs allocates through its own jemalloc, which by default keeps freed pages for seconds: a run reading big
# tables one after the other then holds each one's peak at once (measured at scale 100: 1.3 GiB instead of
# 0.9 GiB), at no measurable cost in time. Set before deltalake loads; a value set by the user wins.
os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")

from totesys_platform.lake.delta import (  # noqa: E402
    ChangesUnavailableError, Commit, ConcurrentCommitError, LakeTable, LakeZone, Position, Snapshot,
)
from totesys_platform.lake.store import LakeError, LakeStore, LakeUnavailableError
from totesys_platform.lake.writes import Spool, TableWrite, commit_write

__all__ = [
    "ChangesUnavailableError", "Commit", "ConcurrentCommitError", "LakeError", "LakeStore", "LakeTable",
    "LakeUnavailableError", "LakeZone", "Position", "Snapshot", "Spool", "TableWrite", "commit_write",
]
