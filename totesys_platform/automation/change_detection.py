"""Cheap change detection on totesys: one small query on PostgreSQL's activity counters, no table scan.

`pg_stat_user_tables` counts inserted, updated and deleted tuples per table. Any difference from the
last seen counters (including a reset, which only causes one extra, harmless run) means the table may
have changed. The counters are a trigger only: what a run extracts is decided by the lake's
watermarks, so a missed or spurious signal can never lose or duplicate a change; the 20-minute
schedule is the backstop.
"""

from __future__ import annotations

import json

from totesys_platform.connections import connect
from totesys_platform.source.contract import TABLE_NAMES

_COUNTERS_SQL = """
SELECT relname, n_tup_ins + n_tup_upd + n_tup_del
FROM pg_stat_user_tables
WHERE schemaname = 'public' AND relname = ANY(%s)
"""


def read_change_counters(db_url: str, *, connect_timeout: int = 10) -> dict[str, int]:
    with connect(db_url, purpose="sensor", what="the totesys source database", setting="TOTESYS_DB_URL",
                 hint="Check TOTESYS_DB_URL and that the server is up", connect_timeout=connect_timeout,
                 autocommit=True) as conn:
        rows = conn.execute(_COUNTERS_SQL, (list(TABLE_NAMES),)).fetchall()
    return {name: int(count) for name, count in rows}


def changed_tables(previous: dict[str, int] | None, current: dict[str, int]) -> list[str]:
    """Tables whose counters differ from the previous reading; all tables when there is none."""
    if previous is None:
        return sorted(current)
    return sorted(t for t in current if previous.get(t) != current[t])


def encode_cursor(counters: dict[str, int]) -> str:
    return json.dumps(counters, sort_keys=True)


def decode_cursor(cursor: str | None) -> dict[str, int] | None:
    if not cursor:
        return None
    try:
        data = json.loads(cursor)
    except ValueError:
        return None
    return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else None
