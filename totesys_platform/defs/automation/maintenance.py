"""The lake maintenance job and its schedule: compaction, checkpoints and vacuum of every lake table."""

import dagster as dg
from pydantic import Field

from totesys_platform.defs.automation.jobs import automation_enabled
from totesys_platform.automation.run_sizes import ecs_tags
from totesys_platform.defs.ingestion.assets import ingestion_key
from totesys_platform.lake.maintenance import DEFAULT_RETENTION_HOURS, maintain_table
from totesys_platform.defs.processed.assets import processed_key
from totesys_platform.lake.quarantine import TABLE as QUARANTINE_TABLE
from totesys_platform.defs.resources import LakeResource
from totesys_platform.source.contract import TABLE_NAMES
from totesys_platform.star_schema import TARGET_TABLES


class MaintenanceConfig(dg.Config):
    retention_hours: float = Field(
        default=DEFAULT_RETENTION_HOURS, ge=0,
        description="Vacuum deletes files that no table version younger than this needs (time travel, change "
                    "feed readers and runs in flight need them).")


@dg.op(description="Compact small files, checkpoint the log and vacuum old unreferenced files, in every lake table.")
def maintain_lake(context: dg.OpExecutionContext, config: MaintenanceConfig, lake: LakeResource) -> None:
    ingestion, processed = lake.ingestion(), lake.processed()
    tables = [(ingestion, t, ingestion_key(t)) for t in TABLE_NAMES] + [(ingestion, QUARANTINE_TABLE, None)]
    tables += [(processed, t, processed_key(t)) for t in TARGET_TABLES]
    compacted = vacuumed = 0
    for zone, name, key in tables:
        report = maintain_table(zone.table(name), retention_hours=config.retention_hours)
        if report.skipped:
            continue
        compacted += report.files_compacted
        vacuumed += report.files_vacuumed
        if key is not None:
            context.log_event(dg.AssetObservation(asset_key=key, metadata={
                "lake/version": report.version, "lake/files": report.files_after,
                "files_compacted": report.files_compacted, "files_vacuumed": report.files_vacuumed,
                "log_files": report.log_files,
            }))
    context.log.info(f"Lake maintained: {compacted} small files compacted, {vacuumed} unreferenced files vacuumed "
                     f"(retention {config.retention_hours:g} h)")


@dg.job(
    name="lake_maintenance",
    description="Keeps the lake's Delta tables fast and small: compaction, checkpoints, log clean-up, vacuum.",
    executor_def=dg.in_process_executor,
    tags=ecs_tags("whole_history"),
)
def lake_maintenance_job():
    maintain_lake()


lake_maintenance_schedule = dg.ScheduleDefinition(
    name="lake_maintenance_hourly",
    job=lake_maintenance_job,
    cron_schedule="35 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING if automation_enabled() else dg.DefaultScheduleStatus.STOPPED,
    description="Every hour: compaction of the small files each tick writes, checkpoints, vacuum after 7 days.",
)
