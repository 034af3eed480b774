"""The Dagster code location: every asset, check, job, schedule, sensor and resource of the platform.

The graph reads left to right: totesys (observable sources) -> lake/ingestion -> lake/processed -> warehouse.
"""

import dagster as dg

from totesys_platform.defs.analytics.assets import sales_report
from totesys_platform.defs.automation.alerts import ALERT_SENSORS, AlertsResource
from totesys_platform.defs.automation.checks import ALL_CHECKS
from totesys_platform.defs.automation.maintenance import lake_maintenance_job, lake_maintenance_schedule
from totesys_platform.defs.automation.source_checks import SOURCE_CHECKS
from totesys_platform.defs.automation.jobs import (
    RUN_LOGGING, etl_schedule, first_validation_sensor, full_validation_schedule, rebuild_warehouse_job,
    refresh_sales_report, report_schedule, totesys_etl, totesys_new_data_sensor, validate, validation_schedule,
)
from totesys_platform.defs.ingestion.assets import extract_totesys
from totesys_platform.defs.processed.assets import PROCESSED_ASSETS
from totesys_platform.defs.resources import build_resources
from totesys_platform.defs.source.assets import observe_totesys
from totesys_platform.defs.warehouse.assets import WAREHOUSE_ASSETS

defs = dg.Definitions(
    assets=[observe_totesys, extract_totesys, *PROCESSED_ASSETS, *WAREHOUSE_ASSETS, sales_report],
    asset_checks=[*ALL_CHECKS, *SOURCE_CHECKS],
    jobs=[totesys_etl, validate, refresh_sales_report, rebuild_warehouse_job, lake_maintenance_job],
    schedules=[etl_schedule, validation_schedule, full_validation_schedule, report_schedule,
               lake_maintenance_schedule],
    sensors=[totesys_new_data_sensor, first_validation_sensor, *ALERT_SENSORS],
    resources={**build_resources(), "alerts": AlertsResource.from_env()},
    loggers=RUN_LOGGING.loggers or None,
    executor=dg.in_process_executor,
)
