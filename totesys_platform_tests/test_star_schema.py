"""The model (`star_schema`) declares each warehouse column once, with its source and derivation; the processed
zone, the warehouse and the benches' floor and pandas approaches all read it, and a derivation one of them
does not know fails loudly. A new source table needs only the contract (and the role script, for production)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from totesys_platform import star_schema
from totesys_platform.lake.processed import dimensions, facts
from totesys_platform.source import contract

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import floor, pandas_seed  # noqa: E402


def _with_column(table: star_schema.TargetTable, name: str, **changes) -> star_schema.TargetTable:
    return dataclasses.replace(table, columns=tuple(
        dataclasses.replace(c, **changes) if c.name == name else c for c in table.columns))


def test_every_derivation_of_the_model_is_done_by_the_processed_zone_the_floor_and_pandas():
    for table in star_schema.TARGET_TABLES.values():
        builder = facts._DERIVE if table.kind == "fact" else dimensions._DERIVE
        for column in table.columns:
            if column.how == "calendar":
                continue  # dim_date's calendar: lake/processed/dates.py, the floor's and pandas' own calendar
            assert column.how in builder, (table.name, column.name, column.how)
    for how in set(star_schema.HOWS) - {"calendar"}:
        assert how in floor._SQL_OF, how
        assert how in pandas_seed._PANDAS_OF or how == "deleted_at", how


def test_lineage_and_dim_date_follow_a_column_s_source_in_the_model(monkeypatch):
    """Pointing a column at another source column in the model alone changes its lineage and what dim_date reads."""
    from totesys_platform.lake.processed import dates
    payment = _with_column(star_schema.TARGET_TABLES["fact_payment"], "payment_date", source="created_at",
                           how="date_of")
    monkeypatch.setitem(star_schema.TARGET_TABLES, "fact_payment", payment)
    assert facts.fact_lineage("fact_payment")["payment_date"] == [("payment", "created_at")]
    assert ("payment", "payment_date", "text_date") not in star_schema.date_sources()
    assert dates.DATE_HOWS[("sales_order", "agreed_payment_date")] == "text_date"
    assert dates.DATE_HOWS[("payment", "created_at")] == "date_of"


def test_a_derivation_unknown_to_a_builder_the_floor_or_pandas_fails_loudly(monkeypatch):
    payment = _with_column(star_schema.TARGET_TABLES["fact_payment"], "paid", how="soundex")
    paid = next(c for c in payment.columns if c.name == "paid")
    with pytest.raises(NotImplementedError, match=r"fact_payment\.paid: .*'soundex'.*_SQL_OF"):
        floor.column_sql(payment, paid)
    with pytest.raises(NotImplementedError, match=r"fact_payment\.paid: .*'soundex'.*_PANDAS_OF"):
        pandas_seed._column(payment, paid, None)
    monkeypatch.setitem(star_schema.TARGET_TABLES, "fact_payment", payment)
    rows = contract.SOURCE_TABLES["payment"].arrow_schema.empty_table()
    with pytest.raises(NotImplementedError, match=r"fact_payment\.paid is derived by 'soundex'"):
        facts.build_fact("fact_payment", {"payment": rows}, {})
    design = _with_column(star_schema.TARGET_TABLES["dim_design"], "file_name", how="date_of")
    monkeypatch.setitem(star_schema.TARGET_TABLES, "dim_design", design)
    rows = contract.SOURCE_TABLES["design"].arrow_schema.empty_table()
    with pytest.raises(NotImplementedError, match=r"dim_design\.file_name is derived by 'date_of'"):
        dimensions.build_dimension("dim_design", {"design": rows}, {})


def test_model_problems_name_a_misspelt_source_an_unknown_derivation_and_a_bad_join():
    tables = star_schema.TARGET_TABLES
    assert star_schema.model_problems(tuple(tables.values())) == []
    broken = (
        _with_column(tables["dim_location"], "city", source="cty"),
        _with_column(tables["dim_staff"], "location", source="departmnt.location"),
        _with_column(tables["fact_payment"], "paid", how="soundex"),
        dataclasses.replace(tables["dim_counterparty"], join=star_schema.Join("address", "address_fk")),
        dataclasses.replace(tables["dim_design"], source="designs"),
        _with_column(tables["dim_currency"], "currency_name", how="calendar"),
    )
    problems = star_schema.model_problems(broken)
    assert "dim_location.city comes from address.cty, which is not in the contract" in problems
    assert "dim_staff.location comes from departmnt, which is not one of dim_staff's inputs" in problems
    assert any(p.startswith("fact_payment.paid is derived by 'soundex', not one of copy, ") for p in problems)
    assert "dim_counterparty joins through counterparty.address_fk, which is no column" in problems
    assert "dim_design reads 'designs', which is not a contract table" in problems
    assert "dim_currency.currency_name: only a table without a source (dim_date) is a calendar" in problems


def test_the_processed_zone_builds_a_column_as_the_model_derives_it(monkeypatch):
    """Changing a column's derivation in the model alone changes what the builder writes."""
    from datetime import datetime
    currency = contract.SOURCE_TABLES["currency"]
    rows = pa.Table.from_pylist([{"currency_id": 1, "currency_code": "GBP", "created_at": datetime(2024, 1, 1),
                                  "last_updated": datetime(2024, 1, 2)}], schema=currency.arrow_schema)
    built, _ = dimensions.build_dimension("dim_currency", {"currency": rows}, {})
    assert built.column("currency_name").to_pylist() == ["Pound Sterling"]
    as_code = _with_column(star_schema.TARGET_TABLES["dim_currency"], "currency_name", how="copy")
    monkeypatch.setitem(star_schema.TARGET_TABLES, "dim_currency", as_code)
    built, _ = dimensions.build_dimension("dim_currency", {"currency": rows}, {})
    assert built.column("currency_name").to_pylist() == ["GBP"]


# A 12th source table declared in the contract alone: the simulator creates it, the extraction archives it, the
# Dagster graph has its source, ingestion asset and source check, and the role script is what names it next.
_TWELFTH_TABLE = textwrap.dedent("""
    import json, sys
    from datetime import date
    from totesys_platform.source import contract
    target = contract.SourceTable("sales_target", (
        contract._pk("sales_target"), contract._int("staff_id"), contract._int("units", nullable=True),
        contract.CREATED_AT, contract.LAST_UPDATED))
    contract.SOURCE_TABLES["sales_target"] = target
    contract.TABLE_NAMES = (*contract.TABLE_NAMES, "sales_target")

    import psycopg
    from totesys_platform.lake.delta import LakeZone
    from totesys_platform.lake.ingestion.extract import extract_tables
    from totesys_platform.local import simulator
    url, lake = sys.argv[1], sys.argv[2]
    simulator.seed(url, scale=0.01, end=date(2024, 11, 15), progress=lambda line: None)
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO sales_target VALUES (1, 3, NULL, '2024-11-14 10:00', '2024-11-14 10:00:00.123')")
    zone = LakeZone(lake)
    extracted = extract_tables(url, zone)
    rows = zone.table("sales_target").read()
    from totesys_platform.definitions import defs
    graph = defs.resolve_asset_graph()
    checks = {table: sorted(key.name for key in graph.asset_check_keys
                            if key.asset_key.to_user_string() == f"lake/ingestion/{table}")
              for table in ("sales_target", "address")}
    print(json.dumps({
        "extracted": sorted(extracted),
        "rows": rows.select(["sales_target_id", "staff_id", "units", "last_updated"]).to_pylist(),
        "assets": sorted(k.to_user_string() for k in graph.get_all_asset_keys() if "sales_target" in k.to_user_string()),
        "checks": checks,
    }, default=str))
""")


def test_a_twelfth_source_table_needs_only_the_contract(empty_db_url, tmp_path):
    run = subprocess.run([sys.executable, "-c", _TWELFTH_TABLE, empty_db_url("twelfth"), (tmp_path / "lake").as_uri()],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert "sales_target" in result["extracted"] and len(result["extracted"]) == 12
    assert result["rows"] == [{"sales_target_id": 1, "staff_id": 3, "units": None,
                               "last_updated": "2024-11-14 10:00:00.123000"}]
    assert result["assets"] == ["lake/ingestion/sales_target", "totesys/sales_target"]
    assert "source_matches_lake" in result["checks"]["sales_target"]
    assert result["checks"]["sales_target"] == result["checks"]["address"]  # the same checks as any other table
