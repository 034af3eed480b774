"""The totesys tables as observable source assets: the true origin of the lineage graph."""

import dagster as dg
from psycopg import sql

from totesys_platform.connections import connect
from totesys_platform.defs.resources import CONNECT_TIMEOUT_S, TotesysDatabase
from totesys_platform.source.contract import SOURCE_TABLES, TABLE_NAMES

GROUP = "totesys"


def source_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["totesys", table])


def _column_schema(table: str) -> dg.TableSchema:
    return dg.TableSchema(columns=[
        dg.TableColumn(c.name, c.pg_type, constraints=dg.TableColumnConstraints(nullable=c.nullable))
        for c in SOURCE_TABLES[table].columns
    ])


SOURCE_SPECS = [
    dg.AssetSpec(
        source_key(table),
        group_name=GROUP,
        description=f"The `{table}` table of the operational totesys database (PostgreSQL, read-only).",
        kinds={"postgres"},
        owners=["team:data-engineering"],
        metadata={"dagster/table_name": f"totesys.public.{table}", "dagster/column_schema": _column_schema(table)},
    )
    for table in TABLE_NAMES
]


def observe_tables(db_url: str) -> dict[str, tuple[int, str | None]]:
    """Row count and max(last_updated) of every totesys table, in one read-only query."""
    parts = [
        sql.SQL("SELECT {name}, count(*), max(last_updated)::text FROM {table}").format(
            name=sql.Literal(t), table=sql.Identifier(t)
        )
        for t in TABLE_NAMES
    ]
    query = sql.SQL(" UNION ALL ").join(parts)
    with connect(db_url, purpose="observe", what="the totesys source database", setting="TOTESYS_DB_URL",
                 hint="Check TOTESYS_DB_URL and that the server is up", connect_timeout=CONNECT_TIMEOUT_S) as conn:
        conn.read_only = True
        return {name: (count, latest) for name, count, latest in conn.execute(query)}


@dg.multi_observable_source_asset(specs=SOURCE_SPECS, name="observe_totesys", can_subset=False)
def observe_totesys(context, totesys: TotesysDatabase):
    """Observe every table: a data version from max(last_updated) and the row count."""
    for table, (count, latest) in observe_tables(totesys.connection_url()).items():
        yield dg.ObserveResult(
            asset_key=source_key(table),
            data_version=dg.DataVersion(f"{latest}|{count}"),
            metadata={"row_count": count, "max_last_updated": latest or "(empty)"},
        )
