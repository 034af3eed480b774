"""Ingestion-zone assets: one archive per totesys table, filled by one extraction over one snapshot."""

import contextlib
import time
from datetime import timedelta

import dagster as dg
from pydantic import Field

from totesys_platform.lake.ingestion.deletes import DEFAULT_MAX_SHARE, TOMBSTONES_TOTAL
from totesys_platform.lake.ingestion.extract import (
    RECAPTURED_TOTAL, Extraction, TableExtract, archive_schema, stream_extraction,
)
from totesys_platform.lake.ingestion.late import SourceSnapshot
from totesys_platform.defs.lake_metadata import column_schema, preview_markdown
from totesys_platform.defs.resources import LakeResource, TotesysDatabase
from totesys_platform.defs.source.assets import source_key
from totesys_platform.source.contract import SOURCE_TABLES, TABLE_NAMES

GROUP = "lake_ingestion"


def ingestion_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["lake", "ingestion", table])


INGESTION_SPECS = [
    dg.AssetSpec(
        ingestion_key(table),
        deps=[source_key(table)],
        group_name=GROUP,
        description=(
            f"Write-once archive of every version of every `{table}` row: a Delta Lake table in the lake's "
            "ingestion zone, appended by exactly-once incremental extraction (each commit records the extraction "
            "state). Columns the source adds are archived too."
        ),
        kinds={"deltalake"},
        owners=["team:data-engineering"],
        metadata={"dagster/column_schema": column_schema(archive_schema(SOURCE_TABLES[table]))},
    ).with_io_manager_key("lake_io_manager")
    for table in TABLE_NAMES
]


# Evaluated by the extraction itself, in every run that extracts the table: free, so every tick evaluates it.
VERSIONS_MOVE_FORWARD = "versions_move_forward"
CAPTURE_CHECK_SPECS = [
    dg.AssetCheckSpec(
        VERSIONS_MOVE_FORWARD, asset=ingestion_key(table), blocking=False,
        description=(f"Warns when `{table}` rows changed without `last_updated` moving forward (changed in place, or "
                     "moved backwards): they are archived as new captures and the latest capture wins downstream, "
                     "but the writer should be fixed. The metadata names the ids."),
    )
    for table in TABLE_NAMES
]


def capture_check_key(table: str) -> dg.AssetCheckKey:
    return dg.AssetCheckKey(ingestion_key(table), VERSIONS_MOVE_FORWARD)


class ExtractConfig(dg.Config):
    lookback_minutes: float = 15.0
    connections: int = Field(
        default=2, ge=1,
        description="Source connections reading tables at once, all on one exported snapshot (1: one after the other).")
    max_deleted_share: float = Field(
        default=DEFAULT_MAX_SHARE, ge=0, le=1,
        description="Largest share of a table's rows that may disappear from the source in one run and be archived as "
                    "deleted; more is refused as a truncated or mis-pointed source (1: allow a real mass delete once).")


def _output(result: TableExtract) -> dg.Output:
    metadata = {
        "rows_archived": result.rows,
        "batch": result.batch,
        "duplicates_skipped": result.duplicates_skipped,
        "watermark_from": str(result.watermark_from) if result.watermark_from else "(start)",
        "watermark_to": str(result.watermark_to) if result.watermark_to else "(empty)",
    }
    metadata.update(capture_health(result))
    if result.added_columns:
        metadata["columns_outside_contract"] = ", ".join(f"{name} ({pg_type})" for name, pg_type in result.added_columns)
    if result.rows:
        metadata["preview"] = dg.MetadataValue.md(preview_markdown(result.preview))
    return dg.Output(result.write, output_name=ingestion_key(result.table).to_python_identifier(), metadata=metadata)


def capture_health(result: TableExtract) -> dict[str, object]:
    """Numbers the UI plots per table across runs (the asset's Plots tab): where the frontier is, how long the
    transactions the snapshot could not see were, and what came in besides plain new versions (captures out of
    order, tombstones of deleted rows)."""
    health: dict[str, object] = {
        "source_snapshot": result.snapshot or "(none)",
        "late_versions": result.late_rows,
        "captured_out_of_order": result.out_of_order.count,
        "tombstones": result.tombstones,
        RECAPTURED_TOTAL: int(result.write.state.get(RECAPTURED_TOTAL, 0)) if result.write.state else 0,
        TOMBSTONES_TOTAL: int(result.write.state.get(TOMBSTONES_TOTAL, 0)) if result.write.state else 0,
        "columns_outside_contract_count": len(result.added_columns),
    }
    in_progress = SourceSnapshot.in_progress(result.snapshot)
    if in_progress is not None:
        health["transactions_open_at_snapshot"], health["oldest_open_transaction_xids_behind"] = in_progress
    return health


def _capture_check(result: TableExtract) -> dg.AssetCheckResult:
    captures = result.out_of_order
    return dg.AssetCheckResult(
        asset_key=ingestion_key(result.table), check_name=VERSIONS_MOVE_FORWARD, passed=not captures,
        severity=dg.AssetCheckSeverity.WARN,
        description=captures.describe(SOURCE_TABLES[result.table]) if captures else None,
        metadata={"changed_in_place": captures.changed_in_place_count, "moved_back": captures.moved_back_count,
                  "ids": ", ".join(map(str, captures.ids()[:50])) or "(none)"},
    )


@dg.multi_asset(specs=INGESTION_SPECS, check_specs=CAPTURE_CHECK_SPECS, name="extract_totesys", can_subset=True,
                pool="totesys_extract")
def extract_totesys(
    context: dg.AssetExecutionContext, config: ExtractConfig, totesys: TotesysDatabase, lake: LakeResource
):
    """Archive new and changed rows of the selected tables, all read from one consistent snapshot; the lake IO
    manager commits each table's batch with its extraction state as soon as the table is read, while the others
    are still being read. A table that fails does not stop the others: they are committed, then the step fails
    naming it."""
    tables = [t for t in TABLE_NAMES if ingestion_key(t) in context.selected_asset_keys]
    started = time.monotonic()
    context.log.info(f"Extracting {len(tables)} tables from {totesys.safe_url}")
    run = Extraction({}, {})
    batches = stream_extraction(
        run, totesys.connection_url(), lake.ingestion(), tables,
        lookback=timedelta(minutes=config.lookback_minutes), log=context.log.info, connections=config.connections,
        max_deleted_share=config.max_deleted_share,
    )
    try:
        with contextlib.closing(batches):
            for result in batches:
                yield _output(result)
        total = sum(r.rows for r in run.results.values())
        context.log.info(f"Extraction done: {total} rows archived in {time.monotonic() - started:.1f}s")
        checks = context.selected_asset_check_keys
        for result in run.results.values():
            if capture_check_key(result.table) in checks:
                yield _capture_check(result)
    finally:  # a failed commit stops the step: the batches not committed yet go too
        run.discard()
    failure = run.first_failure()
    if failure is not None:
        raise failure
