"""The PostgreSQL warehouse: schema and migrations (`schema`), the COPY-based loader (`loader`), and the
Dagster IO manager (`io_manager`, imported on its own so the plain library needs no Dagster)."""

from totesys_platform.warehouse.loader import (
    LoadStats, Mode, WarehouseBatch, WarehouseLoadError, load_table, read_table, warehouse_arrow_schema,
)
from totesys_platform.warehouse.schema import (
    WarehouseSchemaError, ensure_schema, get_load_position, reset_warehouse, set_load_state,
)

__all__ = [
    "LoadStats", "Mode", "WarehouseBatch", "WarehouseLoadError", "WarehouseSchemaError", "ensure_schema",
    "get_load_position", "load_table", "read_table", "reset_warehouse", "set_load_state", "warehouse_arrow_schema",
]
