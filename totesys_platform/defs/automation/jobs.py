"""Jobs, the schedule and the new-data sensor that keep the warehouse fresh."""

import hashlib

import dagster as dg

from totesys_platform.automation.change_detection import (
    changed_tables, decode_cursor, encode_cursor, read_change_counters,
)
from totesys_platform.defs.automation.checks import (
    FACT_HISTORY_CHECKS, RECONCILIATION_CHECKS, REFERENTIAL_CHECKS, SCHEMA_CHECKS, VALIDATION_TAG,
)
from totesys_platform.defs.automation.run_logging import configure_run_logging
from totesys_platform.automation.run_sizes import ecs_tags
from totesys_platform.defs.automation.source_checks import SOURCE_CHECKS
from totesys_platform.defs.ingestion.assets import capture_check_key, ingestion_key
from totesys_platform.defs.resources import LakeResource, TotesysDatabase, WarehouseDatabase
from totesys_platform.defs.source.assets import source_key
from totesys_platform.settings import flag
from totesys_platform.source.contract import TABLE_NAMES
from totesys_platform.warehouse.rebuild import rebuild_warehouse

ETL_JOB_NAME = "totesys_etl"
ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
]


def automation_enabled() -> bool:
    """Schedule and sensor run by default; TOTESYS_AUTOMATION=off turns them off (e.g. a staging copy)."""
    return flag("TOTESYS_AUTOMATION")


def _default_status():
    return dg.DefaultSensorStatus.RUNNING if automation_enabled() else dg.DefaultSensorStatus.STOPPED


def _default_schedule_status():
    return dg.DefaultScheduleStatus.RUNNING if automation_enabled() else dg.DefaultScheduleStatus.STOPPED


# Run logs also go to CloudWatch Logs when CLOUDWATCH_LOG_GROUP is set (a logger the job's config names).
RUN_LOGGING = configure_run_logging()

REPORT_KEY = dg.AssetKey(["analytics", "sales_report"])

# One bad table never stops the others (contract section 4): when the extraction fails on one table (its schema
# drifted, most of it vanished), the tables it did archive still go on to the processed zone and the warehouse
# in the same run. Dagster then starts a step once the outputs it reads exist, rather than once every upstream
# step succeeded; the run still fails, naming the table. (Nothing in the pipeline job reads the output of a
# step that failed a blocking check: the report, downstream of the facts, runs in refresh_sales_report.)
TABLE_BY_TABLE_EXECUTOR = dg.in_process_executor.configured(
    {"step_dependency_config": {"require_upstream_step_success": False}}, name="in_process_table_by_table")

# The freshness-critical path: every lake and warehouse asset plus the blocking integrity checks.
# The heavier validation (history comparisons, schema drift) and the report run hourly instead, in jobs of their own,
# so a tick's cost follows the change, not the history.
totesys_etl = dg.define_asset_job(
    ETL_JOB_NAME,
    selection=(dg.AssetSelection.all().without_checks() - dg.AssetSelection.assets(REPORT_KEY))
    | dg.AssetSelection.checks(*REFERENTIAL_CHECKS)
    | dg.AssetSelection.checks(*(capture_check_key(t) for t in TABLE_NAMES)),
    description=(
        "The pipeline: totesys -> ingestion zone -> processed zone -> warehouse, with the blocking "
        "referential-integrity checks and the extraction's versions_move_forward warnings."
    ),
    executor_def=TABLE_BY_TABLE_EXECUTOR,
    config=RUN_LOGGING.run_config or None,
    # Task size on ECS (ignored by the local run launcher); the sensor's first run asks for more.
    tags=ecs_tags("tick"),
)

# The hourly run compares what was added since the checks last passed (and one slice of ids of each big source
# table), so its cost follows the hour's change, not the history. Once a day the same job, tagged
# totesys/validation: full, compares everything, which also covers rows edited in place by hand in the warehouse.
VALIDATION_JOB_NAME = "validate"
validate = dg.define_asset_job(
    VALIDATION_JOB_NAME,
    selection=dg.AssetSelection.checks(
        *FACT_HISTORY_CHECKS, *REFERENTIAL_CHECKS, *RECONCILIATION_CHECKS, *SCHEMA_CHECKS, *SOURCE_CHECKS),
    description=(
        "The validation checks: the warehouse against the lake (fact history, references, row counts), the lake "
        "against the source (source_matches_lake) and schema drift; over what was added since they last passed, "
        "or everything when the run is tagged totesys/validation: full."
    ),
    executor_def=dg.in_process_executor,
    config=RUN_LOGGING.run_config or None,
    tags=ecs_tags("whole_history"),
)

# The report is not validation: a job of its own, so neither waits for the other.
REPORT_JOB_NAME = "refresh_sales_report"
refresh_sales_report = dg.define_asset_job(
    REPORT_JOB_NAME,
    selection=dg.AssetSelection.assets(REPORT_KEY),
    description="The sales report from the warehouse's current state: a chart and an HTML page in the lake.",
    executor_def=dg.in_process_executor,
    config=RUN_LOGGING.run_config or None,
    tags=ecs_tags("tick"),
)

etl_schedule = dg.ScheduleDefinition(
    name="totesys_etl_every_20_minutes",
    job=totesys_etl,
    cron_schedule="*/20 * * * *",
    default_status=_default_schedule_status(),
    description="Backstop: runs totesys_etl (every table, source to warehouse) every 20 minutes, whatever the sensor saw.",
)

validation_schedule = dg.ScheduleDefinition(
    name="validate_hourly",
    job=validate,
    cron_schedule="5 * * * *",
    default_status=_default_schedule_status(),
    description=("Every hour: the fact-history, references, reconciliation and schema checks over what was added "
                 "since they last passed, and one slice of ids of each big source table."),
)

report_schedule = dg.ScheduleDefinition(
    name="refresh_sales_report_hourly",
    job=refresh_sales_report,
    cron_schedule="15 * * * *",
    default_status=_default_schedule_status(),
    description="Every hour: a fresh sales report from the warehouse's current state.",
)

full_validation_schedule = dg.ScheduleDefinition(
    name="validate_in_full_daily",
    job=validate,
    cron_schedule="50 3 * * *",
    tags={VALIDATION_TAG: "full"},
    default_status=_default_schedule_status(),
    description="Every day at 03:50: the validation checks over the whole history and every source row.",
)


def tick_checks(assets: list[dg.AssetKey]) -> list[dg.AssetCheckKey]:
    """The checks a tick evaluates: the blocking references_resolve of the facts it loads and the extraction's
    own versions_move_forward. Without this list a run of a subset of assets evaluates every check on them, the
    hourly whole-history ones included."""
    selected = set(assets)
    return [key for check in REFERENTIAL_CHECKS for key in check.check_keys if key.asset_key in selected] + [
        capture_check_key(t) for t in TABLE_NAMES if ingestion_key(t) in selected]


def downstream_of(tables: list[str], asset_graph) -> list[dg.AssetKey]:
    """Every ingestion, processed and warehouse asset that a change in these source tables can affect: the
    graph's downstream of their ingestion assets, two steps (processed, then warehouse); a warehouse fact's
    dependency on its dimensions is load order, not data, so a dimension change does not select the facts."""
    selection = dg.AssetSelection.assets(*(ingestion_key(t) for t in tables)).downstream(depth=2)
    return sorted(selection.resolve(asset_graph), key=lambda key: key.to_user_string())


@dg.sensor(
    name="totesys_new_data_sensor",
    job=totesys_etl,
    minimum_interval_seconds=15,
    default_status=_default_status(),
    description=(
        "Notices changed totesys tables from PostgreSQL's activity counters (one small query, no scan) and "
        "runs what is downstream of them. Waits while a pipeline run is active; the next tick picks the change up."
    ),
)
def totesys_new_data_sensor(context: dg.SensorEvaluationContext, totesys: TotesysDatabase):
    active = context.instance.get_runs(filters=dg.RunsFilter(job_name=ETL_JOB_NAME, statuses=ACTIVE_STATUSES), limit=1)
    if active:
        return dg.SkipReason(f"Run {active[0].run_id} is active; changes will be picked up after it.")
    counters = read_change_counters(totesys.connection_url())
    changed = changed_tables(decode_cursor(context.cursor), counters)
    if not changed:
        return dg.SkipReason("No change in totesys since the last run.")
    run_key = hashlib.sha256(encode_cursor(counters).encode()).hexdigest()[:16]
    selected = downstream_of(changed, context.repository_def.asset_graph)
    return dg.SensorResult(
        run_requests=[dg.RunRequest(
            run_key=f"totesys-change-{run_key}",
            asset_selection=selected,
            asset_check_keys=tick_checks(selected),
            # No cursor yet: every row of every table is new, the initial load; it gets a bigger task on ECS.
            tags={"totesys/changed_tables": ",".join(changed),
                  **(ecs_tags("initial_load") if context.cursor is None else {})},
        )],
        cursor=encode_cursor(counters),
        asset_events=[
            dg.AssetObservation(asset_key=source_key(t), metadata={"change_counter": counters[t]}) for t in changed
        ],
    )


def first_validation(instance: dg.DagsterInstance) -> list[dg.RunRequest] | dg.SkipReason:
    """The validation checks and the report once each, as soon as the warehouse is loaded, on an instance that
    never made the report: a new user's UI shows the report and the hourly checks within minutes, not at the next
    hour."""
    if instance.get_latest_materialization_event(REPORT_KEY) is not None:
        return dg.SkipReason("The sales report exists: the validation checks and the report run on their schedules.")
    # Run keys: at most once per instance.
    return [dg.RunRequest(run_key="first-validation", job_name=VALIDATION_JOB_NAME),
            dg.RunRequest(run_key="first-sales-report", job_name=REPORT_JOB_NAME)]


@dg.run_status_sensor(
    name="first_validation_after_the_first_load",
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[totesys_etl],
    request_jobs=[validate, refresh_sales_report],
    default_status=_default_status(),
    description="After the first successful pipeline run of an instance, runs validate and refresh_sales_report once.",
)
def first_validation_sensor(context: dg.RunStatusSensorContext):
    return first_validation(context.instance)


@dg.op(description="Empty the warehouse and load every processed-zone batch again, in one transaction.")
def rebuild_warehouse_op(context: dg.OpExecutionContext, lake: LakeResource, warehouse: WarehouseDatabase):
    stats = rebuild_warehouse(warehouse.connection_url(), lake.processed(), log=context.log.info)
    return {table: s.inserted for table, s in stats.items()}


@dg.job(
    name="rebuild_warehouse",
    description="Rebuild a fresh warehouse from the lake alone (after a restore, a schema change or for audit).",
    executor_def=dg.in_process_executor,
    tags=ecs_tags("rebuild"),
)
def rebuild_warehouse_job():
    rebuild_warehouse_op()
