"""The data lake: storage for file:// and s3:// zones and the per-table manifest commit log (no Dagster)."""

from totesys_platform.lake.manifest import ConcurrentCommitError, ManifestEntry, TableLog, data_file_key
from totesys_platform.lake.store import (
    AlreadyExistsError,
    LakeError,
    LakeStore,
    LakeUnavailableError,
    LocalLakeStore,
    ParquetWritten,
    S3LakeStore,
)

__all__ = [
    "AlreadyExistsError",
    "ConcurrentCommitError",
    "LakeError",
    "LakeStore",
    "LakeUnavailableError",
    "LocalLakeStore",
    "ManifestEntry",
    "ParquetWritten",
    "S3LakeStore",
    "TableLog",
    "data_file_key",
]
