"""Ingestion-zone assets: one archive per totesys table, filled by one extraction over one snapshot."""

import time
from datetime import timedelta

import dagster as dg
from pydantic import Field

from totesys_platform.lake.ingestion.extract import TableExtract, extract_tables
from totesys_platform.lake.metadata import column_schema, preview_markdown
from totesys_platform.resources import LakeResource, TotesysDatabase
from totesys_platform.source.assets import source_key
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
            f"Write-once archive of every version of every `{table}` row, as Parquet batches in the lake's "
            "ingestion zone. Exactly-once incremental extraction; the zone's manifest is the source of truth."
        ),
        kinds={"parquet"},
        owners=["team:data-engineering"],
        metadata={"dagster/column_schema": column_schema(SOURCE_TABLES[table].arrow_schema)},
    )
    for table in TABLE_NAMES
]


class ExtractConfig(dg.Config):
    lookback_minutes: float = 15.0
    connections: int = Field(
        default=2, ge=1,
        description="Source connections reading tables at once, all on one exported snapshot (1: one after the other).")


def _materialization(result: TableExtract) -> dg.MaterializeResult:
    metadata = {
        "rows_archived": result.rows,
        "dagster/row_count": result.total_rows,
        "duplicates_skipped": result.duplicates_skipped,
        "file": dg.MetadataValue.path(result.file_uri) if result.file_uri else "(nothing new: no file written)",
        "watermark_from": str(result.watermark_from) if result.watermark_from else "(start)",
        "watermark_to": str(result.watermark_to) if result.watermark_to else "(empty)",
        "manifest_seq": result.entry.seq if result.entry else "(unchanged)",
        "dagster/column_schema": column_schema(SOURCE_TABLES[result.table].arrow_schema),
    }
    if result.rows:
        metadata["preview"] = dg.MetadataValue.md(preview_markdown(result.preview))
    return dg.MaterializeResult(asset_key=ingestion_key(result.table), metadata=metadata)


@dg.multi_asset(specs=INGESTION_SPECS, name="extract_totesys", can_subset=True, pool="totesys_extract")
def extract_totesys(
    context: dg.AssetExecutionContext, config: ExtractConfig, totesys: TotesysDatabase, lake: LakeResource
):
    """Archive new and changed rows of the selected tables, all read from one consistent snapshot."""
    tables = [t for t in TABLE_NAMES if ingestion_key(t) in context.selected_asset_keys]
    started = time.monotonic()
    context.log.info(f"Extracting {len(tables)} tables from {totesys.safe_url}")
    results = extract_tables(
        totesys.connection_url(), lake.ingestion(), tables,
        lookback=timedelta(minutes=config.lookback_minutes), log=context.log.info, connections=config.connections,
    )
    total = sum(r.rows for r in results.values())
    context.log.info(f"Extraction done: {total} rows archived in {time.monotonic() - started:.1f}s")
    for table in tables:
        yield _materialization(results[table])
