"""Dagster IO manager for the lake's two zones (folder or S3): thin wiring over `lake.writes.commit_write`.

The ingestion and processed assets return a `TableWrite` per table; this IO manager is the only writer of
the assets' tables: it commits the batch and the stage's progress in one Delta commit and adds the table's
version, rows, files and schema to the materialization. Inputs are read back as the table's current rows.
(Besides it, only operators' tools commit to the zones: `lake quarantine` to `_quarantine`, `lake convert`,
and the maintenance job, whose commits rewrite files and carry the progress forward unchanged.)
"""

from __future__ import annotations

import dagster as dg
import pyarrow as pa

from totesys_platform.lake.delta import LakeZone
from totesys_platform.defs.lake_metadata import column_schema
from totesys_platform.lake.writes import TableWrite, commit_write
from totesys_platform.defs.resources import LakeResource

ZONES = ("ingestion", "processed")


class LakeIOManager(dg.ConfigurableIOManager):
    """Stores `lake/ingestion/<table>` and `lake/processed/<table>` assets as Delta tables of their zone."""

    lake: LakeResource

    def _zone_and_table(self, context: dg.OutputContext | dg.InputContext) -> tuple[LakeZone, str]:
        path = context.asset_key.path if context.has_asset_key else []
        if len(path) != 3 or path[0] != "lake" or path[1] not in ZONES:
            raise ValueError(f"the lake IO manager stores lake/ingestion/* and lake/processed/* assets, not {path}")
        zone = self.lake.ingestion() if path[1] == "ingestion" else self.lake.processed()
        return zone, path[2]

    def handle_output(self, context: dg.OutputContext, obj: TableWrite) -> None:
        zone, name = self._zone_and_table(context)
        if not isinstance(obj, TableWrite):
            raise TypeError(f"lake table {name}: the lake IO manager stores a TableWrite, not {type(obj).__name__}")
        if obj.table != name or obj.read.table.zone.url != zone.url:
            obj.discard()
            raise ValueError(f"asset {context.asset_key.to_user_string()} returned a write for {obj.read.table.uri}, "
                             f"not for lake table {zone.table_uri(name)}")
        commit = commit_write(obj)
        if commit is None:  # nothing new: the metadata says so (a log line is one more event to store)
            schema = obj.read.arrow_schema()
            # Every materialisation carries its column schema: the schema-change checks compare the last two.
            columns = column_schema(schema) if schema is not None else (
                (context.definition_metadata or {}).get("dagster/column_schema"))
            context.add_output_metadata({
                "lake/version": obj.read.version,
                "committed": dg.MetadataValue.text("nothing new: no commit"),
                "dagster/uri": zone.table_uri(name),
                **({"dagster/column_schema": columns} if columns is not None else {}),
            })
            return
        now = zone.table(name).snapshot()
        schema = now.arrow_schema()
        context.add_output_metadata({
            "lake/version": dg.MetadataValue.int(commit.version),
            "lake/commit_id": dg.MetadataValue.text(commit.commit_id),
            "rows_committed": dg.MetadataValue.int(commit.rows),
            "files_added": dg.MetadataValue.int(commit.files),
            "lake/files": dg.MetadataValue.int(now.file_count()),
            "dagster/row_count": dg.MetadataValue.int(now.row_count()),
            "dagster/uri": dg.MetadataValue.text(commit.uri),
            **({"dagster/column_schema": column_schema(schema)} if schema is not None else {}),
        })

    def load_input(self, context: dg.InputContext) -> pa.Table:
        from totesys_platform.lake.processed.runner import from_lake

        zone, name = self._zone_and_table(context)
        rows = zone.table(name).read()
        if rows is None:
            raise FileNotFoundError(f"lake table {name} does not exist yet at {zone.table_uri(name)}: materialise it first")
        return from_lake(name, rows) if context.asset_key.path[1] == "processed" else rows
