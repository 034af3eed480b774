"""Lake maintenance (plain logic, no Dagster): compact small files, checkpoint the log, clean up old log entries
and vacuum files no retained version needs.

Every tick appends small files (a batch of a few rows per table), so reads slow down and the log grows unless
the tables are maintained. Compaction rewrites small files into larger ones without changing any row (a
``dataChange: false`` commit, which readers of the change feed skip); it carries the table's latest progress
record forward, so that record never lives only in a log entry that is later cleaned up. Vacuum deletes only
files that no version younger than the retention needs (default 7 days: the Delta default), and the files of
runs that failed before their commit once they are that old.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from totesys_platform.lake.delta import APP_ID, LakeTable
from totesys_platform.lake.progress import META_KEY, progress_record, read_progress, record_of
from totesys_platform.lake.store import LakeError

DEFAULT_RETENTION_HOURS = 7 * 24
STAGE = "maintenance"


@dataclass(frozen=True)
class MaintenanceReport:
    table: str
    version: int  # the table's version after maintenance (-1: the table does not exist)
    files_before: int
    files_after: int
    files_compacted: int  # small files rewritten into larger ones
    files_vacuumed: int  # files no retained version needs, deleted
    log_files: int  # commit files left in _delta_log

    @property
    def skipped(self) -> bool:
        return self.version < 0


def maintain_table(table: LakeTable, *, retention_hours: float = DEFAULT_RETENTION_HOURS,
                   dry_run: bool = False) -> MaintenanceReport:
    """Compact, vacuum, checkpoint and clean up the log of one table (with `dry_run`, only count what vacuum
    would delete and change nothing)."""
    from deltalake import PostCommitHookProperties

    if retention_hours < 0:
        raise ValueError(f"retention_hours must not be negative, got {retention_hours}")
    read = table.snapshot()
    if not read.exists:
        return MaintenanceReport(table.name, -1, 0, 0, 0, 0, 0)
    delta = read.delta
    files_before = read.file_count()
    compacted = 0
    # The checkpoint and the log clean-up happen once, at the end, when the newest commit is known to carry
    # the progress record; delta-rs would otherwise do them after any commit here whose version is a multiple
    # of the checkpoint interval.
    hooks = PostCommitHookProperties(create_checkpoint=False, cleanup_expired_logs=False)
    try:
        if not dry_run:
            metrics = delta.optimize.compact(commit_properties=_carrying(table, read.txn_version, read.state),
                                          post_commithook_properties=hooks)
            compacted = int(metrics.get("numFilesRemoved", 0) or 0)
            delta = table.snapshot().delta
        # full: also the files no version ever referenced (a run that died before its commit wrote them).
        vacuumed = delta.vacuum(retention_hours=int(retention_hours), dry_run=dry_run,
                                enforce_retention_duration=False, full=True,
                                commit_properties=_carrying(table, read.txn_version, read.state),
                                post_commithook_properties=hooks)
        if not dry_run:
            delta = _progress_in_newest_commit(table)
            # The checkpoint is the newest commit, which holds the progress record: the log clean-up removes
            # only entries before it, so the record survives however long the table stays quiet.
            delta.create_checkpoint()
            delta.cleanup_metadata()
    except LakeError:
        raise
    except Exception as err:  # noqa: BLE001 - delta-rs raises several unrelated types
        raise LakeError(f"cannot maintain lake table {table.name} at {table.uri} ({table.zone.where()}): "
                        f"{str(err).splitlines()[0][:300]}") from None
    after = table.snapshot()
    return MaintenanceReport(table.name, after.version, files_before, after.file_count(), compacted, len(vacuumed),
                             _log_files(table))


def _carrying(table: LakeTable, txn: int, state: dict):
    """Commit properties that carry transaction `txn`'s progress record forward (none for a table without one)."""
    from deltalake import CommitProperties

    if not txn:
        return None
    return CommitProperties(custom_metadata={META_KEY: progress_record(table.name, uuid.uuid4().hex, STAGE, state,
                                                                        txn)})


def _progress_in_newest_commit(table: LakeTable):
    """The table, its newest commit carrying the latest progress record. Maintenance commits carry the record
    read at the start; if a writer committed a newer one meanwhile, or another engine committed since, an empty
    commit carrying the latest record is added."""
    delta = table.snapshot().delta
    txn = delta.transaction_version(APP_ID) or 0
    if not txn:
        return delta
    record = record_of(next(iter(delta.history(1)), {}))
    if record is not None and record.get("txn") == txn:
        return delta
    latest = read_progress(delta, txn)
    if latest is None:
        raise LakeError(f"{table.name}: the progress record of transaction {txn} is not in the retained log of "
                        f"{table.uri}; restore the table's _delta_log from a backup")
    delta.create_write_transaction([], mode="append", schema=delta.schema(),
                                   commit_properties=_carrying(table, txn, latest.get("state") or {}))
    return table.snapshot().delta


def _log_files(table: LakeTable) -> int:
    log = f"{table.name}/_delta_log/"
    return sum(1 for key in table.zone.objects.list_keys(log) if key.endswith(".json") and "/" not in key[len(log):])


__all__ = ["DEFAULT_RETENTION_HOURS", "MaintenanceReport", "maintain_table"]
