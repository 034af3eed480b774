"""The benchmark suite runs end to end on the tiny profile and writes a complete report.

No timing is asserted anywhere: wall times depend on the machine. What is asserted is that every
approach ran every phase (or says why not), that the approaches built the same warehouse, and that
the report carries the machine, the commands and every target of the issue.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.run import breakdown, parse_duration, quiet_server, step_group  # noqa: E402

PHASES = ("initial", "incremental", "no-change")
BUILT = ("floor", "pandas", "ours")  # the approaches that build the star schema


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory) -> tuple[str, dict, str, Path]:
    folder = tmp_path_factory.mktemp("bench")
    out, results_dir = folder / "BENCHMARKS.md", folder / "results"
    # Its own results folder: a real benchmark may be writing bench/results at the same time.
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--profile", "tiny", "--dlt", "auto", "--output", str(out),
         "--results-dir", str(results_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, f"bench/run.py failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    results = json.loads((results_dir / "results.json").read_text())
    return out.read_text(), results, result.stdout, results_dir


def _result_rows(report: str) -> dict[tuple[str, str], str]:
    """(approach, phase) -> the rest of the row, from the Results table."""
    rows = {}
    for line in report.splitlines():
        match = re.match(r"^\| 0\.05 \| (\w+) \| (initial|incremental|no-change) \| (.*)$", line)
        if match:
            rows[(match.group(1), match.group(2))] = match.group(3)
    return rows


def test_every_approach_and_phase_has_a_row(tiny_report):
    report, results, _, _ = tiny_report
    rows = _result_rows(report)
    assert set(rows) == {(a, p) for a in ("floor", "dlt", "pandas", "ours") for p in PHASES}
    for name in BUILT:
        for phase in PHASES:
            assert "FAILED" not in rows[(name, phase)] and "skipped" not in rows[(name, phase)], rows[(name, phase)]
            assert re.match(r"1 \| [0-9.]+ \(", rows[(name, phase)]), rows[(name, phase)]
    # dlt is measured when bench/.venv-dlt exists, and otherwise says why it is not.
    dlt_rows = [rows[("dlt", p)] for p in PHASES]
    assert all(r.startswith("1 |") for r in dlt_rows) or all("skipped: dlt is not installed" in r for r in dlt_rows)
    ok = {(r["approach"], r["phase"]) for r in results["records"] if r["ok"]}
    assert {(a, p) for a in BUILT for p in PHASES} <= ok


def test_approaches_build_the_same_warehouse(tiny_report):
    report, results, _, _ = tiny_report
    assert "Agreement: floor, seeds and ours agree on every table but dim_date." in report
    rows = results["scales"][0]["warehouse_rows"]
    source = results["scales"][0]["source_rows"]
    tick = results["scales"][0]["ticks"][0]
    orders = tick["sales_orders"] + tick["purchase_orders"]
    # Every fact version: the seeded rows, the tick's new orders, and each payment paid on the tick.
    assert rows["ours"]["fact_sales_order"] == source["sales_order"] + tick["sales_orders"]
    assert rows["ours"]["fact_payment"] == source["payment"] + orders + tick["payments_paid"]
    assert rows["ours"]["dim_transaction"] == source["transaction"] + orders


def test_report_names_machine_commands_targets_and_lake(tiny_report):
    report, results, stdout, results_dir = tiny_report
    for heading in ("## Targets (issue 7)", "## Machine", "## Results", "## Where our time goes",
                    "## Lake files (ours)", "## Consistency check", "## How to run"):
        assert heading in report
    for target in ("within 1.5x of the in-database floor", "at least 2x faster than dlt", "under 10 s end to end",
                   "No-change forced CLI run under 8 s", "under 1 GiB", "compressed Parquet"):
        assert target in report
    assert re.search(r"PostgreSQL \d+\.\d+", report) and "CPUs" in report and "GiB RAM" in report
    assert "dagster job execute -m totesys_platform.definitions -j totesys_etl" in report
    assert "vacuumed and analyzed and a checkpoint before each run" in report
    assert results["scales"][0]["lake"]["ingestion"]["files"] > 0
    assert "UNCOMPRESSED" not in results["scales"][0]["lake"]["ingestion"]["codecs"]
    assert (results_dir / "plot.png").stat().st_size > 0
    assert len(list((results_dir / "logs").glob("ours-*.log"))) == 3
    assert "scale 0.05: seeding" in stdout  # progress lines as it goes


def test_each_run_starts_with_the_previous_runs_rows_vacuumed_and_analyzed(pg_server, warehouse_url):
    """Autovacuum finds nothing left to do from the previous approach's load (it would run during the next)."""
    import psycopg

    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE loaded AS SELECT g AS id FROM generate_series(1, 50000) AS g")
        conn.execute("SELECT pg_stat_force_next_flush()")
        quiet_server(pg_server)
        conn.execute("SELECT pg_stat_clear_snapshot()")
        vacuumed, analyzed, inserted_since = conn.execute(
            "SELECT last_vacuum IS NOT NULL, last_analyze IS NOT NULL, n_ins_since_vacuum FROM pg_stat_user_tables "
            "WHERE relname = 'loaded'").fetchone()
    assert vacuumed and analyzed and inserted_since == 0


def test_report_keeps_hand_written_notes_between_runs(tmp_path):
    from bench import run

    out = tmp_path / "B.md"
    out.write_text(f"old\n{run.NOTES_START}\nThe lead's analysis.\n{run.NOTES_END}\nold\n")
    assert run._preserved_notes(out) == "The lead's analysis."
    assert "No notes yet" in run._preserved_notes(tmp_path / "missing.md")


def test_dagster_durations_and_step_groups_are_read_back():
    assert parse_duration("0.83ms") == pytest.approx(0.00083)
    assert parse_duration("533ms") == pytest.approx(0.533)
    assert parse_duration("5.6s") == pytest.approx(5.6)
    assert parse_duration("4m52s") == 292
    assert parse_duration("1h4m") == 3840
    with pytest.raises(ValueError, match="not a Dagster duration"):
        parse_duration("soon")
    stderr = ('... Finished execution of step "extract_totesys" in 2.5s.\n'
              '... Finished execution of step "warehouse__fact_payment" in 1m2s.\n'
              '... Finished execution of step "warehouse__fact_payment_references_resolve" in 500ms.\n')
    result = breakdown(stderr, wall_s=70.0)
    assert result["groups"]["extract (totesys -> ingestion zone)"] == 2.5
    assert result["groups"]["warehouse loads"] == 62
    assert result["groups"]["asset checks"] == 0.5
    assert result["groups"]["outside steps (CLI start, definitions, run storage)"] == pytest.approx(5.0)
    assert step_group("lake__processed__dim_date") == "processed zone (Arrow transforms)"
    assert step_group("analytics__sales_report") == "sales report"


def test_help_describes_the_options():
    result = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for option in ("--scales", "--repeat", "--profile", "--output", "--profile-ours", "--freshness"):
        assert option in result.stdout


def test_bad_options_are_refused_with_a_clear_message():
    result = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--repeat", "0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--repeat and --repeat-large must be at least 1" in result.stderr


def _copy_new_orders_to_warehouse(totesys_url: str, warehouse_url: str, since: int, stop) -> None:
    """Stand-in for a running stack: puts each new order's id into the warehouse's fact tables."""
    import psycopg
    from psycopg import sql

    while not stop.is_set():
        with psycopg.connect(totesys_url) as src, psycopg.connect(warehouse_url, autocommit=True) as dst:
            for table in ("sales_order", "purchase_order"):
                column = sql.Identifier(f"{table}_id")
                new_orders = src.execute(sql.SQL(
                    "SELECT {} FROM {} WHERE created_at > (SELECT max(created_at) FROM payment WHERE payment_id <= %s)"
                ).format(column, sql.Identifier(table)), (since,))
                for (order_id,) in new_orders:
                    dst.execute(sql.SQL("INSERT INTO {} ({}) VALUES (%s)").format(
                        sql.Identifier(f"fact_{table}"), column), (order_id,))
        stop.wait(0.3)


@pytest.fixture
def freshness_stack(totesys_url, warehouse_url, monkeypatch):
    import psycopg

    from totesys_platform.local import simulator

    simulator.seed(totesys_url, scale=0.01, progress=lambda _: None)
    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE fact_sales_order (sales_order_id integer)")
        conn.execute("CREATE TABLE fact_purchase_order (purchase_order_id integer)")
    monkeypatch.setenv("TOTESYS_DB_URL", totesys_url)
    monkeypatch.setenv("WAREHOUSE_DB_URL", warehouse_url)
    with psycopg.connect(totesys_url) as conn:
        last_payment = conn.execute("SELECT max(payment_id) FROM payment").fetchone()[0]
    return totesys_url, warehouse_url, last_payment


def test_freshness_times_each_change_until_it_reaches_the_warehouse(freshness_stack, capsys):
    import threading

    from bench import run

    totesys_url, warehouse_url, last_payment = freshness_stack
    stop = threading.Event()
    helper = threading.Thread(target=_copy_new_orders_to_warehouse,
                              args=(totesys_url, warehouse_url, last_payment, stop), daemon=True)
    helper.start()
    try:
        assert run.run_freshness(samples=2, timeout=30, interval=0.1, spacing=0.5) == 0
    finally:
        stop.set()
        helper.join()
    out = capsys.readouterr().out
    assert out.count("in the warehouse after") == 2
    assert "freshness over 2 samples: median" in out and ", p95 " in out


def test_freshness_gives_up_naming_the_missing_row(freshness_stack, capsys):
    from bench import run

    assert run.run_freshness(samples=1, timeout=1, interval=0.1) == 1
    assert re.search(r"fact_(sales|purchase)_order \d+ not in the warehouse after 1 s", capsys.readouterr().out)


def test_tick_on_an_unseeded_database_names_the_empty_table(totesys_url):
    from bench.workload import WorkloadError, apply_tick

    with pytest.raises(WorkloadError, match="totesys table staff is empty: seed the database"):
        apply_tick(totesys_url)


def test_floor_tick_before_any_initial_load_says_what_to_do(totesys_url, warehouse_url):
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "floor.py"), "--source", totesys_url, "--target", warehouse_url,
         "--mode", "tick"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert 'relation "raw._watermark" does not exist; run --mode initial into this target first' in result.stderr


def test_pandas_and_floor_ticks_pick_up_exactly_the_change(totesys_url, empty_db_url):
    """The two star-schema baselines: initial load, one tick, a no-change run; every version lands once."""
    import psycopg

    from bench.workload import apply_tick
    from totesys_platform.local import simulator

    simulator.seed(totesys_url, scale=0.01, progress=lambda _: None)
    targets = {"floor": empty_db_url("floor"), "pandas": empty_db_url("pandas")}
    scripts = {"floor": "floor.py", "pandas": "pandas_seed.py"}

    def run_all(mode: str) -> None:
        for name, url in targets.items():
            result = subprocess.run([sys.executable, str(REPO / "bench" / scripts[name]), "--source", totesys_url,
                                     "--target", url, "--mode", mode], capture_output=True, text=True, timeout=300)
            assert result.returncode == 0, f"{name} {mode}: {result.stderr[-2000:]}"

    run_all("initial")
    tick = apply_tick(totesys_url, orders=10, payments_paid=5)
    run_all("tick")
    run_all("tick")
    with psycopg.connect(totesys_url) as conn:
        payments = conn.execute("SELECT count(*) FROM payment").fetchone()[0]
    for name, url in targets.items():
        with psycopg.connect(url) as conn:
            facts = conn.execute("SELECT count(*) FROM fact_payment").fetchone()[0]
            paid = conn.execute("SELECT count(*) FROM fact_payment WHERE paid").fetchone()[0]
        assert facts == payments + tick.payments_paid, name  # each paid payment is a second version
        assert paid >= tick.payments_paid, name


def test_the_many_ticks_bench_measures_ticks_and_logs_and_its_section_survives_a_regenerated_report(tmp_path):
    from bench.run import _kept_sections

    report = tmp_path / "BENCHMARKS.md"
    report.write_text("# Benchmarks\n\n## Results\n\n## How to run\n\nmake bench\n")
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "lake_ticks.py"), "--ticks", "4", "--scale", "0.02", "--orders", "3",
         "--maintain-every", "2", "--sample-every", "2", "--output", str(report), "--results-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    measured = json.loads((tmp_path / "lake_ticks.json").read_text())
    assert len(measured["tick_s"]) == 4 and len(measured["maintenance_s"]) == 2
    assert [s["tick"] for s in measured["samples"]] == [1, 2, 4]
    # Each tick commits to sales_order; after a maintenance its log is one checkpointed commit and one data file.
    last = measured["samples"][-1]["ingestion"]
    assert last["version"] > measured["samples"][0]["ingestion"]["version"]
    assert last["data_files"] == 1 and last["read_files"] == 1
    text = report.read_text()
    (section,) = _kept_sections(report)
    assert "## Lake over many ticks" in section and "| 4 | ingestion/sales_order |" in section
    assert text.index("## Results") < text.index(section) < text.index("## How to run")
    # Run again: the section is replaced, not repeated.
    subprocess.run([sys.executable, str(REPO / "bench" / "lake_ticks.py"), "--ticks", "1", "--scale", "0.02",
                    "--output", str(report), "--results-dir", str(tmp_path)], check=True, capture_output=True,
                   timeout=600)
    assert report.read_text().count("## Lake over many ticks") == 1


def test_the_deletes_bench_times_the_comparison_and_its_section_survives_a_regenerated_report(tmp_path):
    from bench.run import _kept_sections

    report = tmp_path / "BENCHMARKS.md"
    report.write_text("# Benchmarks\n\n## Results\n\n<!-- lake-ticks:start -->\n## Lake over many ticks\n"
                      "<!-- lake-ticks:end -->\n\n## How to run\n\nmake bench\n")
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "deletes.py"), "--scale", "0.02", "--deletes", "5", "--repeat", "2",
         "--output", str(report), "--results-dir", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    measured = json.loads((tmp_path / "deletes.json").read_text())
    assert [s["tombstones"] for s in measured["samples"]] == [5, 5]
    first, second = measured["samples"]
    assert first["gone"] == 5 and second["live_ids"] == first["live_ids"] - 5 == second["source_ids"] + 5
    lake_ticks, deletes = _kept_sections(report)
    assert "## Detecting deletes" in deletes and "| the source's ids" in deletes
    text = report.read_text()
    assert text.index("## Results") < text.index(deletes) < text.index("## How to run")


def test_the_validation_bench_section_judges_the_hourly_run_and_survives_a_regenerated_report(tmp_path):
    from bench.lake_ticks import splice
    from bench.run import _kept_sections
    from bench.validation import END, START, render

    def job(wall: float, rss: float) -> dict:
        return {"wall_s": wall, "cpu_s": wall, "server_cpu_s": 1.0, "peak_rss_mib": rss}

    checks = {"source_matches_lake": 1.0, "fact_history_matches_lake": 2.0}
    result = {"when": "2026-12-03T23:43", "scales": [
        {"scale": 10, "jobs": {"first": job(13, 560), "hourly": job(8, 400), "daily": job(14, 560)}, "checks_s": checks},
        {"scale": 100, "jobs": {"first": job(43, 2500), "hourly": job(9.5, 410), "daily": job(54, 2600)},
         "checks_s": checks}]}
    section = render(result)
    assert section.startswith(START) and section.endswith(END) and "**met** (9.5 s; peak 400 and 410 MiB)" in section
    assert "| 100 | hourly | 9.5 |" in section
    result["scales"][1]["jobs"]["hourly"]["wall_s"] = 13.0
    assert "**missed** (13.0 s" in render(result)

    report = tmp_path / "BENCHMARKS.md"
    report.write_text("# Benchmarks\n\n## Results\n\n## How to run\n\nmake bench\n")
    splice(report, section, START, END)
    (kept,) = _kept_sections(report)
    assert "## Hourly validation" in kept


def test_the_mass_update_bench_section_lists_each_run_and_survives_a_regenerated_report(tmp_path):
    from bench.lake_ticks import splice
    from bench.mass_update import END, START, render
    from bench.run import _kept_sections

    def run(change: str, variant: str, rss: float, state: int) -> dict:
        return {"change": change, "variant": variant, "rows": 1_585_000, "late_rows": 0, "wall_s": 12.5,
                "peak_rss_mib": rss, "state_bytes": state, "remembered": 0}

    result = {"when": "2026-12-04T04:00", "scales": [{"scale": 100, "table_rows": 1_585_000, "runs": [
        run("mass update", "bounded", 300, 1024), run("mass update", "unbounded", 2900, 90 * 1024 * 1024)]}]}
    section = render(result)
    assert section.startswith(START) and section.endswith(END)
    assert "| 100 | 1,585,000 | mass update | bounded | 1,585,000 | 12.5 | 300 | 1 |" in section
    assert "| unbounded | 1,585,000 | 12.5 | 2900 | 92160 |" in section

    report = tmp_path / "BENCHMARKS.md"
    report.write_text("# Benchmarks\n\n## Results\n\n## How to run\n\nmake bench\n")
    splice(report, section, START, END)
    (kept,) = _kept_sections(report)
    assert "## Mass update" in kept
