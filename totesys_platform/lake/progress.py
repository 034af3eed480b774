"""The progress a commit of ours records in its commit info (plain logic over a delta-rs table's history)."""

from __future__ import annotations

import json
from typing import Iterable

from totesys_platform.lake.store import LakeError

# The commit-info key of our progress record.
META_KEY = "totesys"


def progress_record(table: str, commit_id: str, stage: str, state: dict, txn: int) -> str:
    """The JSON a commit of ours carries: its id, the stage, the stage's progress and the transaction it belongs
    to (maintenance commits carry the latest one forward, so it is never only in a log entry cleaned up)."""
    try:
        return json.dumps({"commit_id": commit_id, "stage": stage, "state": state, "txn": txn}, allow_nan=False,
                          sort_keys=True)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{table}: the progress to record is not JSON-able: {err}") from None


def read_progress(delta, txn: int) -> dict | None:
    """The progress recorded with application transaction `txn` (the table's newest): in the newest commit of
    ours that carries that transaction's record. Usually the newest commit; a maintenance commit made from an
    older read carries an older transaction and is passed over, as are other engines' commits."""
    for limit in (1, 20, None):
        infos = list(history(delta, limit=limit))
        for info in infos:
            record = record_of(info)
            if record is not None and record.get("txn", txn) == txn:
                return record
        if limit is not None and len(infos) < limit:
            break
    return None


def history(delta, limit: int | None) -> Iterable[dict]:
    try:
        return delta.history(limit)
    except Exception as err:  # noqa: BLE001
        raise LakeError(f"cannot read the commit history of {delta.table_uri}: {err}") from None


def record_of(info: dict) -> dict | None:
    raw = info.get(META_KEY)
    if not isinstance(raw, str):
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
