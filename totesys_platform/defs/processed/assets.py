"""Processed-zone assets: the star-schema tables as Delta tables, built incrementally from the ingestion zone."""

import dagster as dg

from totesys_platform.defs.ingestion.assets import ingestion_key
from totesys_platform.defs.lake_metadata import column_schema
from totesys_platform.lake.processed.runner import lake_schema, process_table
from totesys_platform.lake.processed.transforms import COLUMN_LINEAGE, PROCESSED_SPECS
from totesys_platform.defs.resources import LakeResource
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
    schema = column_schema(lake_schema(name))

    @dg.asset(
        key=processed_key(name),
        deps=[ingestion_key(s) for s in spec.inputs],
        group_name=GROUP,
        kinds={"deltalake", "pyarrow"},
        owners=["team:data-engineering"],
        io_manager_key="lake_io_manager",
        description=(
            f"`{name}` ({target.kind} of the star schema) as a Delta Lake table in the processed zone, built "
            f"incrementally from {', '.join(f'`{s}`' for s in spec.inputs)}. "
            + ("Every version of every source row, appended (times as text HH:MM:SS.mmm)." if target.kind == "fact"
               else "The latest row of every key, merged.")
        ),
        metadata={"dagster/column_schema": schema, "dagster/column_lineage": column_lineage(name)},
    )
    def _asset(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.Output:
        result = process_table(name, lake.ingestion(), lake.processed())
        if result.rebuilt:
            context.log.warning(f"{name}: {result.rebuilt}; rebuilt from all of its inputs ({result.rows} rows)")
        elif result.changed:  # nothing new: the metadata says so (a log line is one more event to store)
            context.log.info(f"{name}: {result.rows} rows from {sum(result.input_rows.values())} new ingestion rows")
        for source, why in result.held_back.items():
            context.log.warning(f"{name}: held back the new rows of {source} until its bad row is dealt with: {why}")
        return dg.Output(result.write, metadata={
            "rows_added": result.rows,
            "input_rows": sum(result.input_rows.values()),
            "consumed_ingestion_versions": dg.MetadataValue.json(result.consumed),
            **({"rebuilt": dg.MetadataValue.text(result.rebuilt)} if result.rebuilt else {}),
            **({"held_back": dg.MetadataValue.json(result.held_back)} if result.held_back else {}),
            "dagster/column_lineage": column_lineage(name),
        })

    return _asset


PROCESSED_ASSETS = [_build_processed_asset(name) for name in TARGET_TABLES]
