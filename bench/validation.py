"""The hourly validation's cost: the `validate` job at each scale, and each of its checks on its own
(issue 16: the hourly job under 10 s at scale 100, and the same peak memory at scale 10 and 100).

For each `--scales` value: seeds totesys, loads the lake and the warehouse (plain functions, as
bench/lake_ticks.py does), then runs the job through Dagster's CLI (measured like the other approaches: wall time
and the peak RSS of its process tree) three times: its first evaluation, an hourly one after an hour of activity
through the pipeline, and the daily one over everything; then times each check's whole-history evaluation in this
process. Results go to bench/results/validation.json and, rendered, to the "Hourly validation" section of
BENCHMARKS.md (kept when bench/run.py regenerates the rest).

    .venv/bin/python bench/validation.py --scales 10 100
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402

from bench.approaches import REPO_ROOT  # noqa: E402
from bench.lake_ticks import run_once, scales_main, seed_stack  # noqa: E402
from bench.workload import apply_tick  # noqa: E402
from bench.measure import run_measured  # noqa: E402
from bench.run import postmaster_pid  # noqa: E402
from totesys_platform.lake.delta import LakeZone  # noqa: E402
from totesys_platform.lake.ingestion.reconcile import source_drift  # noqa: E402
from totesys_platform.local.postgres import LocalPostgres, free_port  # noqa: E402
from totesys_platform.source.contract import TABLE_NAMES  # noqa: E402
from totesys_platform.star_schema import FACTS  # noqa: E402
from totesys_platform.defs.automation.checks import VALIDATION_TAG  # noqa: E402
from totesys_platform.warehouse.history_check import check_fact_history  # noqa: E402
from totesys_platform.warehouse.validation import (  # noqa: E402
    DIMENSION_SOURCES, check_references, dimension_reconciliation,
)

START, END = "<!-- validation:start -->", "<!-- validation:end -->"
BAR_S = 10.0  # issue 16: the hourly validation job under 10 s at scale 100
HOUR_TICKS = 3  # the pipeline's schedule runs every 20 minutes


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


def _timed(function, *args, **kwargs) -> float:
    started = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - started


def time_checks(source: str, warehouse: str, ingestion: LakeZone, processed: LakeZone) -> dict[str, float]:
    """Seconds per kind of check over the whole history (the daily run), summed over the tables it runs on
    (its plain function, in this process)."""
    spent = {"source_matches_lake": sum(_timed(source_drift, source, ingestion, t) for t in TABLE_NAMES)}
    with psycopg.connect(warehouse, autocommit=True) as conn:
        spent["fact_history_matches_lake"] = sum(
            _timed(check_fact_history, conn, ingestion, processed, f, full=True) for f in FACTS)
        spent["references_resolve"] = sum(_timed(check_references, conn, f, full=True) for f in FACTS)
        spent["row_count_matches_lake"] = sum(
            _timed(dimension_reconciliation, conn, ingestion, d) for d in DIMENSION_SOURCES)
    return spent


def run_job(env: dict, server: LocalPostgres, what: str, scale: float, tags: dict | None = None,
            job_name: str = "validate") -> dict:
    command = [str(Path(sys.executable).with_name("dagster")), "job", "execute", "-m", "totesys_platform.definitions",
               "-j", job_name, *(["--tags", json.dumps(tags)] if tags else [])]
    job = run_measured(command, env=env, cwd=REPO_ROOT, timeout=1800, server_pid=postmaster_pid(server))
    if not job.ok:
        raise SystemExit(f"{job_name} ({what}) failed at scale {scale:g}: {job.error}")
    log(f"scale {scale:g}: {job_name}, {what}: {job.wall_s:.1f} s, peak {job.peak_rss_mib:.0f} MiB")
    return {"wall_s": job.wall_s, "cpu_s": job.cpu_s, "server_cpu_s": job.server_cpu_s,
            "peak_rss_mib": job.peak_rss_mib}


def measure_scale(scale: float, workdir: Path) -> dict:
    server = LocalPostgres(workdir / "pgdata", free_port()).start()
    try:
        log(f"scale {scale:g}: seeding, then loading the lake and the warehouse")
        source, warehouse = seed_stack(server, scale)
        ingestion, processed = (LakeZone((workdir / z).as_uri()) for z in ("ingestion", "processed"))
        run_once(source, warehouse, ingestion, processed)
        home = workdir / "dagster_home"
        home.mkdir(exist_ok=True)
        env = {**os.environ, "TOTESYS_DB_URL": source, "WAREHOUSE_DB_URL": warehouse, "DAGSTER_HOME": str(home),
               "LAKE_INGESTION_URL": ingestion.url, "LAKE_PROCESSED_URL": processed.url}
        env.pop("DAGSTER_PG_URL", None)
        jobs = {"first": run_job(env, server, "first evaluation", scale)}
        log(f"scale {scale:g}: an hour of activity ({HOUR_TICKS} ticks of the pipeline)")
        for tick in range(HOUR_TICKS):
            apply_tick(source, orders=100, payments_paid=50, seed=tick)
            run_once(source, warehouse, ingestion, processed)
        jobs["hourly"] = run_job(env, server, "hourly, after an hour of activity", scale)
        jobs["daily"] = run_job(env, server, "daily, everything", scale, {VALIDATION_TAG: "full"})
        jobs["report"] = run_job(env, server, "the hourly report", scale, job_name="refresh_sales_report")
        checks = time_checks(source, warehouse, ingestion, processed)
        return {"scale": scale, "jobs": jobs, "checks_s": checks}
    finally:
        server.stop()


def render(result: dict) -> str:
    rows = result["scales"]
    largest = rows[-1]["jobs"]["hourly"]
    memory = [r["jobs"]["hourly"]["peak_rss_mib"] for r in rows]
    verdict = "**met**" if largest["wall_s"] < BAR_S else "**missed**"
    scales = " ".join(f"{r['scale']:g}" for r in rows)
    lines = [START, "## Hourly validation", "",
             f"Generated by `bench/validation.py --scales {scales}` on {result['when'][:16]} UTC. After an "
             "initial load, the `validate` job through Dagster's CLI (wall time and the peak RSS of its "
             f"process tree): its first evaluation, an hourly one after an hour of activity ({HOUR_TICKS} ticks "
             "of 100 orders and 50 payments, each through the pipeline), and the daily one over everything "
             "(`validate_in_full_daily`); then the hourly sales report (`refresh_sales_report`, a job of its own). "
             "Bar (issue 16): the hourly job under "
             f"{BAR_S:g} s at scale 100 and the same peak memory at scale 10 and 100: at scale "
             f"{rows[-1]['scale']:g}, {verdict} ({largest['wall_s']:.1f} s; peak "
             + " and ".join(f"{m:.0f}" for m in memory) + " MiB).", "",
             "| scale | run | wall s | CPU s | server CPU s | peak RSS MiB |", "|---|---|---|---|---|---|"]
    for r in rows:
        for run, job in r["jobs"].items():
            lines.append(f"| {r['scale']:g} | {run} | {job['wall_s']:.1f} | {job['cpu_s']:.1f} | "
                         f"{(job['server_cpu_s'] or 0):.1f} | {job['peak_rss_mib']:.0f} |")
    lines += ["", "The daily run's checks on their own over the whole history (seconds, summed over the tables "
              "each runs on):", "",
              "| check | " + " | ".join(f"scale {r['scale']:g}" for r in rows) + " |",
              "|---|" + "---|" * len(rows)]
    for check in rows[0]["checks_s"]:
        lines.append(f"| {check} | " + " | ".join(f"{r['checks_s'][check]:.2f}" for r in rows) + " |")
    lines += ["", END]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return scales_main(argv, __doc__, "validation", measure_scale, render, START, END)


if __name__ == "__main__":
    raise SystemExit(main())
