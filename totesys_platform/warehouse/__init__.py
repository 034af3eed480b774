"""The PostgreSQL warehouse: schema and migrations (`schema`), the COPY-based loader (`loader`, with its bulk-load
levers in `bulk_levers`), reading tables back as Arrow (`reads`). No Dagster here: the Postgres IO manager is in
totesys_platform/defs/warehouse/io_manager.py."""

from totesys_platform.warehouse.loader import LoadStats, Mode, WarehouseBatch, WarehouseLoadError, load_table
from totesys_platform.warehouse.reads import read_table, warehouse_arrow_schema
from totesys_platform.warehouse.schema import (
    WarehouseSchemaError, ensure_schema, get_load_position, reset_warehouse, set_load_state,
)

__all__ = [
    "LoadStats", "Mode", "WarehouseBatch", "WarehouseLoadError", "WarehouseSchemaError", "ensure_schema",
    "get_load_position", "load_table", "read_table", "reset_warehouse", "set_load_state", "warehouse_arrow_schema",
]
