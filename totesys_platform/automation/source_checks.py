"""The hourly `source_matches_lake` checks: every totesys row against the latest archived version of its id."""

import dagster as dg

from totesys_platform.lake.ingestion.assets import ingestion_key
from totesys_platform.lake.ingestion.reconcile import SourceDrift, describe, source_drift
from totesys_platform.resources import LakeResource, TotesysDatabase
from totesys_platform.source.contract import TABLE_NAMES


def drift_result(drift: SourceDrift) -> dg.AssetCheckResult:
    """Fails (ERROR) on a change extraction can never archive; warns when rows were only deleted."""
    deleted_only = drift.passed and drift.counts.get("deleted", 0) > 0
    return dg.AssetCheckResult(
        passed=drift.passed and not deleted_only,
        severity=dg.AssetCheckSeverity.WARN if deleted_only else dg.AssetCheckSeverity.ERROR,
        description=describe(drift),
        metadata={
            "source_rows": drift.source_rows,
            "archived_ids": drift.archived_ids,
            "pending_extraction": drift.pending,
            "next_extraction_reads_from": str(drift.reach) if drift.reach else "(the beginning)",
            **{f"{kind}_count": count for kind, count in drift.counts.items()},
            **{f"{kind}_sample": dg.MetadataValue.json(sample) for kind, sample in drift.samples.items()},
        },
    )


def _source_check(table: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=ingestion_key(table),
        name="source_matches_lake",
        description=(
            f"Every `{table}` row in totesys equals the latest archived version of its id, or is newer and "
            "within the next extraction's window. Fails naming ids changed without moving last_updated, "
            "moved backwards, or committed later than the look-back allows; warns on deleted ids."
        ),
    )
    def _check(totesys: TotesysDatabase, lake: LakeResource) -> dg.AssetCheckResult:
        return drift_result(source_drift(totesys.connection_url(), lake.ingestion(), table))

    return _check


SOURCE_CHECKS = [_source_check(t) for t in TABLE_NAMES]
