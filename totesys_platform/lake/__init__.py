"""The data lake: Delta Lake tables in a folder or S3 prefix per zone (`delta`), what a stage hands to it
(`writes`), and plain objects beside the tables (`store`). No Dagster here but `io_manager`."""

from totesys_platform.lake.delta import (
    ChangesUnavailableError, Commit, ConcurrentCommitError, LakeTable, LakeZone, Position, Snapshot,
)
from totesys_platform.lake.store import LakeError, LakeStore, LakeUnavailableError
from totesys_platform.lake.writes import Spool, TableWrite, commit_write

__all__ = [
    "ChangesUnavailableError", "Commit", "ConcurrentCommitError", "LakeError", "LakeStore", "LakeTable",
    "LakeUnavailableError", "LakeZone", "Position", "Snapshot", "Spool", "TableWrite", "commit_write",
]
