"""Incremental processing of one processed-zone table: plain logic, no Dagster.

Each processed table is a Delta table in the processed zone: facts keep every version (appended; merged by
version when an input captured a version again, changed in place in the source), dim_date
grows by appended days, the other dimensions hold the latest row per key (merged). Each commit records, per
input, the ingestion table version it consumed through (`Position`). A run reads only the ingestion commits
made since (the change data feed), so its cost follows the size of the change, not of history.

If an input's position is no longer valid (the ingestion zone was lost and extracted again, restored from an
older copy, or its commits since the position were cleaned up), the table is rebuilt from all of its inputs
and replaces its rows in one commit; the warehouse's merges then ignore what they already have.

The lake has no TIME type: time columns travel as text ``HH:MM:SS.mmm`` (`to_lake`, `from_lake`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from totesys_platform.lake.delta import ChangesUnavailableError, LakeZone, Position, Snapshot
from totesys_platform.lake.ingestion.deletes import DELETED_AT_COLUMN
from totesys_platform.lake.ingestion.extract import BATCH_COLUMN, RECAPTURED_TOTAL
from totesys_platform.lake.processed import arrow_ops
from totesys_platform.lake.processed.dates import NAME as DATE_TABLE
from totesys_platform.lake.processed.dates import STATE_SCHEMA as DATE_STATE_SCHEMA, STATE_TABLE as DATE_STATE
from totesys_platform.lake.processed.dimensions import JOINED_DIMENSION_RECIPES
from totesys_platform.lake.processed.transforms import PROCESSED_SPECS, ProcessedSpec
from totesys_platform.lake.processed.validation import BadInputError
from totesys_platform.lake.quarantine import drop_quarantined, quarantined_versions
from totesys_platform.lake.writes import TableWrite
from totesys_platform.source.contract import SOURCE_TABLES
from totesys_platform.star_schema import TARGET_TABLES

STAGE = "process"


@dataclass(frozen=True)
class ProcessResult:
    table: str
    rows: int  # rows this run adds (facts, dim_date) or merges (dimensions)
    write: TableWrite  # for the lake IO manager; its data is None when there is nothing to commit
    consumed: dict[str, int]  # input -> the ingestion table version consumed through (-1: nothing yet)
    input_rows: dict[str, int] = field(default_factory=dict)
    rebuilt: str | None = None  # why the table is rebuilt from all of its inputs, if it is
    held_back: dict[str, str] = field(default_factory=dict)  # input -> the bad row it was not consumed for

    @property
    def changed(self) -> bool:
        return self.write.data is not None


# -- the lake's types for processed tables


def lake_schema(name: str) -> pa.Schema:
    """The processed table's schema in the lake: the star schema's, with time columns as text."""
    return pa.schema([f.with_type(pa.string()) if pa.types.is_time(f.type) else f
                      for f in TARGET_TABLES[name].arrow_schema])


def to_lake(name: str, table: pa.Table) -> pa.Table:
    return table.cast(lake_schema(name))


def from_lake(name: str, table: pa.Table) -> pa.Table:
    """Rows read from the lake with the star schema's types (text times back to time32[ms]); a nullable column
    the table does not hold yet (a fact's `deleted_at` before its first write since) reads as NULL."""
    schema = TARGET_TABLES[name].arrow_schema
    columns = []
    for target in schema:
        if target.name not in table.column_names and target.nullable:
            columns.append(pa.nulls(table.num_rows, target.type))
            continue
        column = table[target.name]
        if pa.types.is_time(target.type):
            stamps = pc.cast(pc.binary_join_element_wise("1970-01-01T", column, ""), pa.timestamp("ms"))
            column = pc.cast(stamps, target.type)
        columns.append(column.cast(target.type))
    return pa.Table.from_arrays(columns, schema=schema)


# -- reading the ingestion zone


def _contract_rows(source: str, rows: pa.Table, quarantined: pa.Table, columns: list[str] | None,
                   with_deletions: bool = False) -> pa.Table:
    """The contract's columns of `rows` (or `columns` of them) without the quarantined versions; `with_deletions`
    keeps the tombstones' `_deleted_at` (NULLs for rows archived before tombstones existed), for the facts."""
    schema = SOURCE_TABLES[source].arrow_schema
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    selected = rows.select(schema.names).cast(schema)
    if with_deletions:
        deleted = rows[DELETED_AT_COLUMN] if DELETED_AT_COLUMN in rows.column_names else pa.nulls(rows.num_rows)
        selected = selected.append_column(DELETED_AT_COLUMN, deleted.cast(pa.timestamp("us")))
    return drop_quarantined(selected, quarantined)


def position_problem(position: Position | None, now: Snapshot) -> str | None:
    """Why lake table `now` no longer continues from `position`, a reader's position in it (None: it does)."""
    if position is None:
        return None
    what = f"lake table {now.table.name} at {now.table.uri}"
    if not now.exists:
        return f"{what} is gone"
    if now.table_id != position.table_id:
        return f"{what} was created again (it is another Delta table now)"
    if now.version < position.version:
        return f"{what} is at version {now.version}, behind version {position.version} read before " \
               "(restored from an older copy)"
    committed_at = now.table.commit_time(position.version, now.delta)
    # (A log entry cleaned up after the log retention cannot be compared: the table id and version must do.)
    if committed_at is not None and committed_at != position.committed_at:
        return f"{what} holds another commit at version {position.version} than the one read before " \
               "(restored from an older copy, then written again)"
    return None


def _all_rows(ingestion: LakeZone, source: str, snapshot: Snapshot, columns: list[str] | None = None) -> pa.Table:
    rows = ingestion.table(source).read(snapshot, columns=None if columns is None else [*columns, BATCH_COLUMN])
    if rows is None:
        return pa.table({})
    return rows.take(pc.sort_indices(rows, sort_keys=[(BATCH_COLUMN, "ascending"), ("last_updated", "ascending")]))


def _joined_state(name: str, ingestion: LakeZone, inputs: dict[str, Snapshot],
                  quarantine: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """The current rows of a joined dimension's two inputs (latest capture per key), read at the versions this
    run consumes through: what the builder joins the new rows with."""
    recipe = JOINED_DIMENSION_RECIPES[name]
    state = {}
    for source, key in ((recipe.main, recipe.main_key), (recipe.reference, recipe.reference_key)):
        rows = _all_rows(ingestion, source, inputs[source])
        if rows.num_rows == 0:
            continue
        rows = _contract_rows(source, rows, quarantine[source], None)
        state[source] = arrow_ops.last_per_key(rows.select(recipe.state_schema(source).names), key)
    return state


def _date_state(processed: LakeZone, current: Snapshot) -> dict[str, pa.Table]:
    """The range dim_date covers now, from the table itself."""
    dates = processed.table("dim_date").read(current, columns=["date_id"])
    if dates is None or dates.num_rows == 0:
        return {}
    low_high = pc.min_max(dates["date_id"])
    return {DATE_STATE: pa.table({"first_date": [low_high["min"].as_py()], "last_date": [low_high["max"].as_py()]},
                                 schema=DATE_STATE_SCHEMA)}


def _write_mode(name: str, recaptures: bool) -> tuple[str, str | tuple[str, ...] | None]:
    """Facts and dim_date are appended; dimensions merged by key. A fact whose inputs captured some version
    again since its last commit (changed in place in the source) is merged by version, so that it keeps one row
    per version, the latest capture."""
    target = TARGET_TABLES[name]
    if target.kind == "fact":
        return ("merge", target.version_key) if recaptures else ("append", None)
    if name == "dim_date":
        return "append", None
    return "merge", target.natural_key


def process_table(name: str, ingestion: LakeZone, processed: LakeZone, *, spec: ProcessedSpec | None = None
                  ) -> ProcessResult:
    """Prepare processed table `name`'s next commit from the ingestion commits it has not consumed yet."""
    spec = spec or PROCESSED_SPECS[name]
    current = processed.table(name).snapshot()
    consumed = {s: Position.from_json(p) for s, p in (current.state.get("consumed") or {}).items()}
    inputs = {s: ingestion.table(s).snapshot() for s in spec.inputs}
    rebuilt = next(filter(None, (position_problem(consumed.get(s), inputs[s]) for s in spec.inputs)), None)
    through = {s: inputs[s].version for s in spec.inputs}
    if rebuilt is None and through == {s: consumed[s].version if consumed.get(s) else -1 for s in spec.inputs}:
        return ProcessResult(name, 0, TableWrite(current, STAGE, current.state, None), through)

    new: dict[str, pa.Table] = {}
    if rebuilt is None:
        try:
            for s in spec.inputs:
                after = consumed[s].version if consumed.get(s) else -1
                new[s] = ingestion.table(s).changes(after, inputs[s], columns=spec.columns_of(s))
        except ChangesUnavailableError as err:
            rebuilt = str(err)
    if rebuilt is not None:
        new = {s: _all_rows(ingestion, s, inputs[s], spec.columns_of(s)) for s in spec.inputs}
    quarantine = {s: quarantined_versions(ingestion, s) for s in spec.inputs}
    is_fact = TARGET_TABLES[name].kind == "fact"
    rows = {s: _contract_rows(s, t if t.num_rows else SOURCE_TABLES[s].arrow_schema.empty_table(), quarantine[s],
                              spec.columns_of(s), with_deletions=is_fact) for s, t in new.items()}

    state: dict[str, pa.Table] = {}
    if rebuilt is None and name in JOINED_DIMENSION_RECIPES:
        state = _joined_state(name, ingestion, inputs, quarantine)
    elif rebuilt is None and name == "dim_date":
        state = _date_state(processed, current)
    delta, held_back = _build(name, spec, rows, state)
    expected = TARGET_TABLES[name].arrow_schema
    if not delta.schema.equals(expected):
        raise TypeError(f"{name}: the builder returned {delta.schema}, expected {expected}")

    # Captures out of order the inputs made, ever (the extraction state's count), against those already consumed.
    recaptured = {s: int(inputs[s].state.get(RECAPTURED_TOTAL, 0)) for s in spec.inputs if inputs[s].exists}
    consumed_recaptures = current.state.get("recaptured") or {}
    mode, key = _write_mode(name, any(n > int(consumed_recaptures.get(s, 0)) for s, n in recaptured.items()))
    positions = {s: inputs[s].position() for s in spec.inputs if inputs[s].exists and s not in held_back}
    if rebuilt is None:  # a held-back input stays where it was; after a rebuild, it is read from its start
        positions |= {s: consumed[s] for s in held_back if consumed.get(s) is not None}
    through = {s: positions[s].version if s in positions else -1 for s in spec.inputs}
    if held_back and delta.num_rows == 0 and rebuilt is None and positions == {
            s: p for s, p in consumed.items() if s in spec.inputs and p is not None}:
        # Only the held-back rows are new: nothing to commit (one empty commit per tick while they wait).
        return ProcessResult(name, 0, TableWrite(current, STAGE, current.state, None), through,
                             {s: t.num_rows for s, t in rows.items()}, None, held_back)
    write = TableWrite(current, STAGE, {"consumed": {s: p.to_json() for s, p in positions.items()},
                                        "recaptured": recaptured},
                       to_lake(name, delta), rows=delta.num_rows, mode="overwrite" if rebuilt and current.exists
                       else mode, key=key,
                       # A fact written before deletes were archived gains `deleted_at` (NULL on its rows).
                       evolve_schema=is_fact)
    return ProcessResult(name, delta.num_rows, write, through, {s: t.num_rows for s, t in rows.items()}, rebuilt,
                         held_back)


def _build(name: str, spec: ProcessedSpec, rows: dict[str, pa.Table], state: dict[str, pa.Table]
           ) -> tuple[pa.Table, dict[str, str]]:
    """The builder's delta, and the inputs held back. dim_date only needs the dates each input references, so a
    bad row in one input holds that input back (not consumed: its new rows are read again on every run, and
    taken once the bad version is quarantined) rather than the calendar of the others and, through it, every
    fact; its own fact still fails on the row. Any other table, or a bad row in every input, fails."""
    held_back: dict[str, str] = {}
    while True:
        try:
            return spec.build(rows, state)[0], held_back
        except BadInputError as err:
            named = _with_quarantine_hint(err, rows)
            if name != DATE_TABLE or err.source not in rows or err.source in held_back \
                    or len(held_back) + 1 >= len(rows):
                raise named from None
            held_back[err.source] = str(named)
            rows = {**rows, err.source: rows[err.source].slice(0, 0)}


def _versions_holding(rows: pa.Table, key: str | None) -> list[tuple[str, str]]:
    """(id, last_updated) of the rows named by a BadInputError key such as ``sales_order_id=42``."""
    if not key or "=" not in key:
        return []
    column, _, value = key.partition("=")
    if not value.isdigit() or column not in rows.column_names:
        return []
    found = rows.filter(pc.equal(rows[column], int(value)))
    return [(value, ts.isoformat(sep=" ", timespec="milliseconds")) for ts in found["last_updated"].to_pylist()]


def _with_quarantine_hint(err: BadInputError, rows: dict[str, pa.Table]) -> BadInputError:
    source = err.source if err.source in rows else next(iter(rows), None)
    versions = _versions_holding(rows[source], err.key) if source else []
    if not versions:
        return err
    id_, last_updated = versions[-1]
    hint = (
        f"After correcting the row in totesys, quarantine the bad version: totesys-platform lake quarantine "
        f"--table {source} --id {id_} --last-updated '{last_updated}' --reason '...'"
    )
    return BadInputError(err.table, err.key, err.column, err.reason, source=err.source,
                         action=f"{err.action}. {hint}" if err.action else hint)


# -- reading the processed zone


def read_processed(processed: LakeZone, name: str, snapshot: Snapshot | None = None,
                   ids: pa.Array | None = None) -> pa.Table:
    """Every row of processed table `name` (now, or at `snapshot`), with the star schema's types; with `ids`, only
    the rows of those natural ids (read a column at a time: bounded memory)."""
    table = processed.table(name)
    if ids is None:
        rows = table.read(snapshot)
    else:
        snapshot = snapshot if snapshot is not None else table.snapshot()
        wanted = pc.cast(ids, pa.int64())
        key = TARGET_TABLES[name].natural_key
        rows = table.read_matching(snapshot, snapshot.arrow_schema().names if snapshot.exists else [], key,
                                   lambda keys: pc.is_in(pc.cast(keys, pa.int64()), value_set=wanted))
    return from_lake(name, rows) if rows is not None else TARGET_TABLES[name].arrow_schema.empty_table()


def read_processed_changes(processed: LakeZone, name: str, after: Position | None, through: Snapshot
                           ) -> tuple[pa.Table, str | None]:
    """The rows of processed table `name` committed after `after` up to `through` (a dimension's latest row per
    key), and None; or, when `after` is no longer a position of this table (or its commits since are gone),
    every row at `through` and the reason."""
    why = position_problem(after, through) if after is not None else None
    if after is not None and why is None:
        try:
            rows = processed.table(name).changes(after.version, through)
        except ChangesUnavailableError as err:
            why = str(err)
        else:
            if rows.num_rows == 0:
                return TARGET_TABLES[name].arrow_schema.empty_table(), None
            if TARGET_TABLES[name].kind == "dimension":
                rows = arrow_ops.last_per_key(rows, TARGET_TABLES[name].natural_key)
            return from_lake(name, rows), None
    return read_processed(processed, name, through), why


__all__ = ["ProcessResult", "from_lake", "lake_schema", "position_problem", "process_table", "read_processed",
           "read_processed_changes", "to_lake"]
