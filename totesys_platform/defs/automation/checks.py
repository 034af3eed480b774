"""Asset checks: the fact history, referential integrity, reconciliation and schema drift."""

from typing import Callable, Iterator

import dagster as dg
from pydantic import Field

from totesys_platform.defs.ingestion.assets import ingestion_key
from totesys_platform.defs.resources import LakeResource, WarehouseDatabase
from totesys_platform.source.contract import TABLE_NAMES
from totesys_platform.star_schema import FACTS, TARGET_TABLES
from totesys_platform.defs.warehouse.assets import warehouse_key
from totesys_platform.warehouse.history_check import check_fact_history
from totesys_platform.warehouse.validation import (
    DIMENSION_SOURCES, FACT_SOURCES, check_references, dimension_reconciliation,
)


# A run tagged `totesys/validation: full` (the daily validate_in_full_daily schedule's, or `totesys-platform
# validate --full`) evaluates every validation check over everything; the config fields do it for one check.
VALIDATION_TAG = "totesys/validation"


def whole_history(context: dg.AssetCheckExecutionContext, asked: bool) -> bool:
    return asked or context.run.tags.get(VALIDATION_TAG) == "full"


def judge_each(context: dg.AssetCheckExecutionContext, name: str,
               judge: Callable[[dg.AssetCheckKey], dg.AssetCheckResult]) -> Iterator[dg.AssetCheckResult]:
    """The result of each selected check of a multi-asset check, table by table. A table whose `judge` raises
    fails its own check with the error and the others are still judged; then the step fails, naming them (so the
    run's alert does)."""
    broken = []
    for key in sorted(context.selected_asset_check_keys, key=lambda k: k.asset_key.path[-1]):
        try:
            result = judge(key)
        except Exception as err:  # noqa: BLE001 - one table's failure never stops the others' checks
            broken.append(f"{key.asset_key.path[-1]}: {err}")
            result = dg.AssetCheckResult(asset_key=key.asset_key, check_name=key.name, passed=False,
                                         description=f"The comparison could not run: {err}")
        yield result
    if broken:
        raise dg.Failure(description=f"{name} could not compare " + "; ".join(broken))


class WholeHistoryConfig(dg.Config):
    full: bool = Field(
        default=False, description="Compare the whole history, not only what was added since the last passing "
                                   "evaluation (a run tagged totesys/validation: full does it for every check).")


def _fact_history_check(fact: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=warehouse_key(fact),
        name="fact_history_matches_lake",
        additional_deps=[ingestion_key(FACT_SOURCES[fact])],
        description=(
            "Every version archived in the lake appears exactly once in the warehouse, nothing else does, "
            f"and `{fact}_current` equals the latest archived version of each id. Compares what was added "
            "since the last passing evaluation; the whole history the first time, after a rebuild, a restored "
            "lake or a quarantine, with config full: true, or in a run tagged totesys/validation: full (daily)."
        ),
    )
    def _check(context: dg.AssetCheckExecutionContext, config: WholeHistoryConfig, lake: LakeResource,
               warehouse: WarehouseDatabase) -> dg.AssetCheckResult:
        with warehouse.connect() as conn:
            result = check_fact_history(conn, lake.ingestion(), lake.processed(), fact,
                                        full=whole_history(context, config.full))
        report = result.report
        return dg.AssetCheckResult(
            passed=result.passed,
            metadata={
                "scan": result.scan,
                "checked_record_ids": f"(.., {result.checked_through}]",
                "lake_versions": report.lake_versions,
                "warehouse_versions": report.warehouse_versions,
                "missing_versions": report.missing_count,
                "missing_sample": dg.MetadataValue.json([list(k) for k in report.missing]),
                "unexpected_versions": report.unexpected_count,
                "unexpected_sample": dg.MetadataValue.json([list(k) for k in report.unexpected]),
                "duplicated_versions": report.duplicated_count,
                "duplicated_sample": dg.MetadataValue.json([list(k) for k in report.duplicated]),
                "current_state_mismatches": result.current_mismatches,
                "current_state_mismatch_ids": dg.MetadataValue.json(result.current_sample),
            },
        )

    return _check


class ReferencesCheckConfig(dg.Config):
    full_scan: bool = Field(
        default=False, description="Examine every fact row, not only those loaded since the last passing evaluation.")


def _referential_integrity_check(fact: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=warehouse_key(fact),
        name="references_resolve",
        blocking=True,
        description=(
            "No fact row refers to a missing dimension row or date. Examines the rows loaded since the last "
            "passing evaluation or bulk load (whose re-added foreign keys validated every row); all rows the "
            "first time, after a rebuild, with config full_scan: true, or in a run tagged "
            "totesys/validation: full (the daily validate_in_full_daily)."
        ),
    )
    def _check(context: dg.AssetCheckExecutionContext, config: ReferencesCheckConfig,
               warehouse: WarehouseDatabase) -> dg.AssetCheckResult:
        with warehouse.connect() as conn:
            result = check_references(conn, fact, full=whole_history(context, config.full_scan))
        return dg.AssetCheckResult(
            passed=result.passed,
            metadata={
                "dangling_by_column": dg.MetadataValue.json(result.dangling),
                "dangling_total": result.dangling_total,
                "scan": "full" if result.full else "incremental",
                "rows_checked": result.rows_checked,
                "checked_record_ids": f"({result.checked_after}, {result.checked_through}]",
            },
        )

    return _check


@dg.multi_asset_check(
    specs=[dg.AssetCheckSpec(
        name="row_count_matches_lake", asset=warehouse_key(dim), additional_deps=[ingestion_key(source)],
        description="The dimension holds exactly one row per distinct source key archived in the lake.",
    ) for dim, (source, *_) in DIMENSION_SOURCES.items()],
    name="row_count_matches_lake",
    can_subset=True,
    description="Each dimension against the distinct source keys archived in the lake, in one step.",
)
def row_count_matches_lake(context: dg.AssetCheckExecutionContext, lake: LakeResource, warehouse: WarehouseDatabase):
    with warehouse.connect() as conn:
        def judge(key: dg.AssetCheckKey) -> dg.AssetCheckResult:
            with conn.transaction():  # a savepoint: a failed count leaves the session usable for the next
                lake_keys, rows = dimension_reconciliation(conn, lake.ingestion(), key.asset_key.path[-1])
            return dg.AssetCheckResult(asset_key=key.asset_key, check_name=key.name, passed=lake_keys == rows,
                                       metadata={"lake_distinct_keys": lake_keys, "warehouse_rows": rows})

        yield from judge_each(context, "row_count_matches_lake", judge)


FACT_HISTORY_CHECKS = [_fact_history_check(f) for f in FACTS]
REFERENTIAL_CHECKS = [_referential_integrity_check(f) for f in FACTS]
RECONCILIATION_CHECKS = [row_count_matches_lake]
SCHEMA_CHECKS = list(dg.build_column_schema_change_checks(
    assets=[ingestion_key(t) for t in TABLE_NAMES] + [warehouse_key(t) for t in TARGET_TABLES]
))

ALL_CHECKS = [*FACT_HISTORY_CHECKS, *REFERENTIAL_CHECKS, *RECONCILIATION_CHECKS, *SCHEMA_CHECKS]
