"""The hourly `source_matches_lake` checks: every totesys row against the latest archived version of its id."""

import time

import dagster as dg
from pydantic import Field

from totesys_platform.defs.automation.checks import judge_each, whole_history
from totesys_platform.defs.ingestion.assets import ingestion_key
from totesys_platform.lake.ingestion.reconcile import SourceDrift, describe, source_drift
from totesys_platform.defs.resources import LakeResource, TotesysDatabase
from totesys_platform.source.contract import TABLE_NAMES

# An hourly evaluation compares at most this many ids of a table: its time and memory stay those of a table
# this size (under 1 s at scale 100), and a table of n ids is covered every n / SLICE_IDS hours.
SLICE_IDS = 50_000


def drift_result(drift: SourceDrift, key: dg.AssetCheckKey) -> dg.AssetCheckResult:
    """Fails (ERROR) on a change extraction can never archive; warns when rows were only deleted."""
    deleted_only = drift.passed and drift.counts.get("deleted", 0) > 0
    return dg.AssetCheckResult(
        asset_key=key.asset_key,
        check_name=key.name,
        passed=drift.passed and not deleted_only,
        severity=dg.AssetCheckSeverity.WARN if deleted_only else dg.AssetCheckSeverity.ERROR,
        description=describe(drift),
        metadata={
            "compared": drift.compared,
            "source_rows": drift.source_rows,
            "archived_ids": drift.archived_ids,
            "pending_extraction": drift.pending,
            "next_extraction_reads_from": str(drift.reach) if drift.reach else "(the beginning)",
            **{f"{kind}_count": count for kind, count in drift.counts.items()},
            **{f"{kind}_sample": dg.MetadataValue.json(sample) for kind, sample in drift.samples.items()},
        },
    )


class SourceCheckConfig(dg.Config):
    full: bool = Field(default=False, description="Compare every row, not the hour's slice of ids (a run tagged "
                                                  "totesys/validation: full does it for every check).")
    slice_ids: int = Field(
        default=SLICE_IDS, gt=0,
        description="A table whose ids reach this many is compared one slice of this many ids per hour.")


def _source_check_spec(table: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        name="source_matches_lake",
        asset=ingestion_key(table),
        description=(
            f"Every `{table}` row in totesys equals the latest archived version of its id, or is newer and "
            "within the next extraction's window. Fails naming ids changed without moving last_updated, "
            "moved backwards, or committed later than the look-back allows; warns on deleted ids. A table "
            f"whose ids reach {SLICE_IDS:,} is compared one slice of ids per hour, in turn; every row with "
            "config full: true or in a run tagged totesys/validation: full (daily)."
        ),
    )


# One step for every table (a step costs about 0.1 s of Dagster's own work; the hourly job's time is mostly that
# and these comparisons). A table whose comparison cannot run fails its own check, then the step, after the others.
@dg.multi_asset_check(
    specs=[_source_check_spec(t) for t in TABLE_NAMES],
    name="source_matches_lake",
    can_subset=True,
    description="Every totesys row against the latest archived version of its id, table by table.",
)
def source_matches_lake(context: dg.AssetCheckExecutionContext, config: SourceCheckConfig, totesys: TotesysDatabase,
                        lake: LakeResource):
    full = whole_history(context, config.full)
    hour = int(time.time() // 3600)

    def judge(key: dg.AssetCheckKey) -> dg.AssetCheckResult:
        drift = source_drift(totesys.connection_url(), lake.ingestion(), key.asset_key.path[-1],
                             slice_ids=None if full else config.slice_ids, hour=hour)
        return drift_result(drift, key)

    yield from judge_each(context, "source_matches_lake", judge)


SOURCE_CHECKS = [source_matches_lake]
