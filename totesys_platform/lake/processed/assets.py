"""Processed-zone assets: the 11 star-schema tables as Parquet, built incrementally from the ingestion zone."""

import dagster as dg

from totesys_platform.lake.ingestion.assets import ingestion_key
from totesys_platform.lake.metadata import column_schema
from totesys_platform.lake.processed.runner import process_table
from totesys_platform.lake.processed.transforms import COLUMN_LINEAGE, PROCESSED_SPECS
from totesys_platform.resources import LakeResource
from totesys_platform.star_schema import TARGET_TABLES

GROUP = "lake_processed"


def processed_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["lake", "processed", table])


def column_lineage(table: str) -> dg.TableColumnLineage:
    return dg.TableColumnLineage(deps_by_column={
        column: [dg.TableColumnDep(asset_key=ingestion_key(src_table), column_name=src_col)
                 for src_table, src_col in sources]
        for column, sources in COLUMN_LINEAGE[table].items()
    })


def _build_processed_asset(name: str) -> dg.AssetsDefinition:
    spec = PROCESSED_SPECS[name]
    target = TARGET_TABLES[name]
    schema = column_schema(target.arrow_schema)

    @dg.asset(
        key=processed_key(name),
        deps=[ingestion_key(s) for s in spec.inputs],
        group_name=GROUP,
        kinds={"parquet", "pyarrow"},
        owners=["team:data-engineering"],
        description=(
            f"`{name}` ({target.kind} of the star schema) as Parquet batches in the processed zone, built "
            f"incrementally from {', '.join(f'`{s}`' for s in spec.inputs)}. "
            + ("Each batch holds new fact versions." if target.kind == "fact"
               else "Each batch holds the latest state of the keys that changed.")
        ),
        metadata={"dagster/column_schema": schema, "dagster/column_lineage": column_lineage(name)},
    )
    def _asset(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        result = process_table(name, lake.ingestion(), lake.processed())
        if result.changed:  # nothing new: the metadata says so (a log line is one more event to store)
            context.log.info(f"{name}: {result.rows} rows from {result.input_rows} new ingestion rows")
        return dg.MaterializeResult(metadata={
            "rows_added": result.rows,
            "rows_in_all_batches": result.total_rows,
            **({"dagster/row_count": result.total_rows} if target.kind == "fact" else {}),
            "input_rows": sum(result.input_rows.values()),
            "consumed_ingestion_seq": dg.MetadataValue.json(result.consumed),
            "file": dg.MetadataValue.path(result.file_uri) if result.file_uri else "(no new rows: no file written)",
            "manifest_seq": result.entry.seq if result.entry else "(unchanged)",
            "dagster/column_schema": schema,
            "dagster/column_lineage": column_lineage(name),
        })

    return _asset


PROCESSED_ASSETS = [_build_processed_asset(name) for name in TARGET_TABLES]
