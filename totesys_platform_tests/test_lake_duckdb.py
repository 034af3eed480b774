"""A third-party engine reads the lake: DuckDB's delta extension (from PyPI, offline) sees exactly what we load.

Neither our code nor deltalake is on the read path: DuckDB resolves each table's committed files from the Delta
log itself, so orphan files or uncommitted batches would show up here as extra rows.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from datetime import datetime
from pathlib import Path

import psycopg
import pyarrow as pa
import pytest

from totesys_platform.local import simulator
from totesys_platform.source.contract import SOURCE_TABLES
from totesys_platform.star_schema import TARGET_TABLES
from totesys_platform_tests.test_pipeline import lake_urls, resources, run_pipeline, seeded_totesys  # noqa: F401

duckdb = pytest.importorskip("duckdb")
PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def duck():
    import duckdb_extensions

    # The extension ships in a wheel; `INSTALL delta` would try to download it.
    duckdb_extensions.import_extension("delta")
    conn = duckdb.connect()
    conn.execute("LOAD delta")
    yield conn
    conn.close()


def _select(duck, path: Path, name: str) -> list[tuple]:
    """Every row of processed table `name` as DuckDB reads it, time columns (text in the lake) cast to TIME."""
    target = TARGET_TABLES[name]
    columns = ", ".join(f'CAST("{f.name}" AS TIME)' if pa.types.is_time(f.type) else f'"{f.name}"'
                        for f in target.arrow_schema)
    return duck.execute(f"SELECT {columns} FROM delta_scan(?)", [str(path / name)]).fetchall()


def _warehouse(url: str, name: str) -> list[tuple]:
    columns = psycopg.sql.SQL(", ").join(map(psycopg.sql.Identifier, TARGET_TABLES[name].column_names))
    with psycopg.connect(url) as conn:
        return conn.execute(psycopg.sql.SQL("SELECT {} FROM {}").format(columns, psycopg.sql.Identifier(name))
                            ).fetchall()


def test_duckdb_reads_every_lake_table_as_the_warehouse_holds_it(duck, seeded_totesys, warehouse_url, lake_urls):
    res = resources(seeded_totesys, warehouse_url, *lake_urls)
    run_pipeline(res, with_checks=False)
    # Live changes make second versions of facts and changed dimension rows (MERGE updates, not appends).
    sim = simulator.Simulator(seeded_totesys, seed=9, update_rate=2.0, reference_update_rate=2.0)
    for minute in range(3):
        sim.step(datetime(2023, 7, 6, 9, minute, 10, 250000))
        run_pipeline(res, with_checks=False)
    ingestion, processed = (Path(url.removeprefix("file://")) for url in lake_urls)

    for name, target in TARGET_TABLES.items():
        in_lake = _select(duck, processed, name)
        assert in_lake, name
        # Facts: every version once; dimensions: the current row of each key, as the warehouse keeps them.
        assert Counter(in_lake) == Counter(_warehouse(warehouse_url, name)), name
        if target.kind == "dimension":
            assert len({row[0] for row in in_lake}) == len(in_lake), f"{name} holds a key twice"
    versions = duck.execute("SELECT count(*), count(DISTINCT (sales_order_id, last_updated_date, last_updated_time)) "
                            "FROM delta_scan(?)", [str(processed / "fact_sales_order")]).fetchone()
    assert versions[0] == versions[1] > duck.execute(
        "SELECT count(DISTINCT sales_order_id) FROM delta_scan(?)", [str(processed / "fact_sales_order")]).fetchone()[0]

    # The ingestion zone: every source row is there, its latest archived version equal to the source's row.
    with psycopg.connect(seeded_totesys) as conn:
        for name, table in SOURCE_TABLES.items():
            key = table.columns[0].name
            names = ", ".join(f'"{c.name}"' for c in table.columns)
            latest = duck.execute(
                f"SELECT {names} FROM delta_scan(?) QUALIFY row_number() OVER "
                f'(PARTITION BY "{key}" ORDER BY last_updated DESC, _batch DESC) = 1', [str(ingestion / name)]).fetchall()
            source = conn.execute(psycopg.sql.SQL("SELECT {} FROM {}").format(
                psycopg.sql.SQL(", ").join(psycopg.sql.Identifier(c.name) for c in table.columns),
                psycopg.sql.Identifier(name))).fetchall()
            assert Counter(latest) == Counter(source), name


def _readme_duckdb_snippet() -> str:
    blocks = re.findall(r"```sh\n(.*?)```", (PROJECT / "README.md").read_text(), flags=re.S)
    (snippet,) = [b for b in blocks if "delta_scan" in b]
    return snippet


def test_the_readme_duckdb_query_runs_as_shown(duck, seeded_totesys, warehouse_url, lake_urls, tmp_path):
    run_pipeline(resources(seeded_totesys, warehouse_url, *lake_urls), with_checks=False)
    project = tmp_path / "project"  # a project folder as `make run` leaves it: .venv and .local/lake
    (project / ".local" / "lake").mkdir(parents=True)
    (project / ".local" / "lake" / "processed").symlink_to(Path(lake_urls[1].removeprefix("file://")))
    (project / ".venv").symlink_to(PROJECT / ".venv")
    out = subprocess.run(["bash", "-c", _readme_duckdb_snippet()], cwd=project, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    with psycopg.connect(warehouse_url) as conn:
        currencies = conn.execute("SELECT count(DISTINCT currency_id) FROM fact_sales_order").fetchone()[0]
    assert "currency_id" in out.stdout and "versions" in out.stdout
    assert len(re.findall(r"^│\s+\d+\s+│", out.stdout, flags=re.M)) == currencies, out.stdout
