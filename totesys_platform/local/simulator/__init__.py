"""The totesys simulator (a development tool, not part of the pipeline): creates the real totesys schema, seeds history, and writes live activity.

Plain logic, no Dagster. Two modes:

- ``seed(url, scale=..., seed=..., end=...)`` fills an empty database with reference data and an
  order history from 2022-11-03 up to (not including) ``end``. The history is generated inside
  PostgreSQL (``generate_series``, with a seeded hash as the random source) and streamed into the
  tables with binary COPY, so a scale-100 history (about 1.6 million orders, transactions and
  payments each) takes well under a minute.
- ``Simulator(url, seed=...).step(now)`` writes what production writes in one moment: new
  order/transaction/payment triples, due payments flipped to paid, sometimes a new design, and
  updates to orders and reference rows, in one transaction. ``run()`` calls ``step`` on the wall
  clock until stopped.

Both are deterministic: the same seed (and scale/end, or sequence of ``now`` values) on the same
starting database gives the same rows.
"""

from totesys_platform.local.simulator.live import Simulator, StepStats, utc_now
from totesys_platform.local.simulator.reference import (
    HISTORY_START, MAX_STEP_MINUTES, PURCHASE_ORDERS_AT_SCALE_1, SALES_ORDERS_AT_SCALE_1,
)
from totesys_platform.local.simulator.seeding import (
    SeedCounts, SimulatorError, connect, create_schema, ensure_schema, schema_sql, seed,
)

__all__ = [
    "HISTORY_START", "MAX_STEP_MINUTES", "PURCHASE_ORDERS_AT_SCALE_1", "SALES_ORDERS_AT_SCALE_1", "SeedCounts",
    "Simulator", "SimulatorError", "StepStats", "connect", "create_schema", "ensure_schema", "schema_sql", "seed",
    "utc_now",
]
