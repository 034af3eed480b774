"""The Dagster code location: every asset, check, job, schedule, sensor and resource of the platform."""

import dagster as dg

defs = dg.Definitions(assets=[])
