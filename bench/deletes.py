"""Detecting deletes: what a run pays to find the rows deleted in totesys, ids only (issue 15: under about 1 s
per 1.6 M-row table at scale 100).

Seeds totesys at `--scale`, archives `--table` once (plain functions, no Dagster), then `--repeat` times: times a
run with nothing deleted (the delete marker unchanged: no ids are compared, the cost every tick pays), deletes
`--deletes` rows, waits for PostgreSQL's statistics to count them, times the comparison's parts in one snapshot
(the source's ids, the ids alive in the archive, the difference) and the extraction run that archives the
tombstones. Results go to bench/results/deletes.json and, rendered, to the "Detecting deletes" section of
BENCHMARKS.md (kept when bench/run.py regenerates the rest).

    .venv/bin/python bench/deletes.py --scale 100
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from bench.approaches import BENCH_DIR, REPO_ROOT  # noqa: E402
from bench.lake_ticks import write_results  # noqa: E402
from totesys_platform.lake.delta import LakeZone  # noqa: E402
from totesys_platform.lake.ingestion import deletes  # noqa: E402
from totesys_platform.lake.ingestion.extract import extract_tables  # noqa: E402
from totesys_platform.local import simulator  # noqa: E402
from totesys_platform.local.postgres import LocalPostgres, free_port, new_temp_root  # noqa: E402
from totesys_platform.source import contract  # noqa: E402

START, END = "<!-- deletes:start -->", "<!-- deletes:end -->"
BAR_S = 1.0  # issue 15: ids only, under about 1 s per 1.6 M-row table


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


def _timed(function, *args):
    started = time.perf_counter()
    value = function(*args)
    return value, time.perf_counter() - started


def wait_for_statistics(url: str, table: str, before: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(url, autocommit=True) as conn:
            if deletes.read_markers(conn, [table])[table] != before:
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"{table}: the delete statistics did not move in {timeout:.0f} s")
        time.sleep(0.1)


def measure_comparison(url: str, zone: LakeZone, table: contract.SourceTable) -> dict:
    """The comparison's parts, in one read-only snapshot as the extraction makes them."""
    archive = zone.table(table.name)
    snapshot = archive.snapshot()
    with psycopg.connect(url) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction():
            present, source_s = _timed(deletes.source_ids, conn, table)
            live, lake_s = _timed(deletes.live_archived_ids, archive, snapshot, table.primary_key)
            gone, diff_s = _timed(deletes.missing_from, live, present)
    return {"source_ids_s": source_s, "live_ids_s": lake_s, "difference_s": diff_s,
            "detection_s": source_s + lake_s + diff_s, "source_ids": len(present), "live_ids": len(live),
            "gone": len(gone)}


def run(args: argparse.Namespace) -> dict:
    table = contract.SOURCE_TABLES[args.table]
    workdir = new_temp_root("deletes-bench-")
    server = LocalPostgres(workdir / "pgdata", free_port()).start()
    try:
        server.create_database("totesys")
        source = server.url("totesys")
        log(f"seeding totesys at scale {args.scale:g}")
        simulator.seed(source, scale=args.scale, seed=42, progress=lambda *a, **k: None)
        zone = LakeZone((workdir / "ingestion").as_uri())
        _, initial_s = _timed(extract_tables, source, zone, [table.name])
        log(f"{table.name} archived in {initial_s:.1f} s")
        samples = []
        for i in range(1, args.repeat + 1):
            _, quiet_s = _timed(extract_tables, source, zone, [table.name])
            with psycopg.connect(source, autocommit=True) as conn:
                before = deletes.read_markers(conn, [table.name])[table.name]
                _, markers_s = _timed(deletes.read_markers, conn, list(contract.TABLE_NAMES))
                conn.execute(sql.SQL("DELETE FROM {t} WHERE {pk} IN (SELECT {pk} FROM {t} ORDER BY random() LIMIT %s)")
                             .format(t=sql.Identifier(table.name), pk=sql.Identifier(table.primary_key)),
                             (args.deletes,))
            wait_for_statistics(source, table.name, before)
            sample = {"repeat": i, "quiet_run_s": quiet_s, "markers_s": markers_s,
                      **measure_comparison(source, zone, table)}
            results, sample["run_with_deletes_s"] = _timed(extract_tables, source, zone, [table.name])
            sample["tombstones"] = results[table.name].tombstones
            samples.append(sample)
            log(f"repeat {i}: detection {sample['detection_s']:.2f} s (source ids {sample['source_ids_s']:.2f} s, "
                f"archive ids {sample['live_ids_s']:.2f} s), {sample['tombstones']} tombstones, run "
                f"{sample['run_with_deletes_s']:.2f} s vs {quiet_s:.2f} s with nothing deleted")
        return {"when": datetime.now(timezone.utc).isoformat(timespec="minutes"), "scale": args.scale,
                "table": table.name, "deletes": args.deletes, "repeat": args.repeat, "samples": samples}
    finally:
        server.stop()


def render(result: dict) -> str:
    samples = result["samples"]

    def median(key: str) -> float:
        return statistics.median(s[key] for s in samples)

    detection = median("detection_s")
    verdict = "**met**" if detection < BAR_S else "**missed**"
    rows = samples[0]["live_ids"]
    lines = [START, "## Detecting deletes", "",
             f"Generated by `bench/deletes.py --scale {result['scale']:g}` on {result['when'][:16]} UTC: "
             f"`{result['table']}` ({rows:,} rows), {result['deletes']} rows deleted at random before each of "
             f"{result['repeat']} runs; medians. Bar (issue 15): ids only, under {BAR_S:g} s per 1.6 M-row table: "
             f"{verdict}, {detection:.2f} s.", "",
             "| what | median s | min-max s |", "|---|---|---|"]
    parts = [("a run with nothing deleted (no ids compared: the cost of every tick)", "quiet_run_s"),
             ("reading the tables' delete markers (before each snapshot)", "markers_s"),
             ("the source's ids (one aggregate, parsed by Arrow)", "source_ids_s"),
             ("the ids alive in the archive (three columns of the Delta table)", "live_ids_s"),
             ("their difference", "difference_s"),
             ("detection: the three above", "detection_s"),
             ("the run that archives the tombstones (detection, tombstones read and committed)", "run_with_deletes_s")]
    for label, key in parts:
        values = [s[key] for s in samples]
        lines.append(f"| {label} | {median(key):.3f} | {min(values):.3f}-{max(values):.3f} |")
    lines += ["", END]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--scale", type=float, default=100, help="seed scale of totesys")
    parser.add_argument("--table", default="payment", choices=contract.TABLE_NAMES, help="the table measured")
    parser.add_argument("--deletes", type=int, default=100, help="rows deleted before each measured run")
    parser.add_argument("--repeat", type=int, default=3, help="measured runs")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "BENCHMARKS.md", help="the report to update")
    parser.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results", help="where deletes.json goes")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds like Ctrl-C: the server is stopped
    if min(args.repeat, args.deletes) < 1:
        parser.error("--repeat and --deletes must be at least 1")
    result = run(args)
    write_results(result, "deletes", args.results_dir, args.output, render(result), START, END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
