"""Many ticks: does a tick stay as fast, and a lake table's log as small, after 1,000 ticks as after 10?

Every tick writes small files and log entries to the Delta tables; without maintenance, reads slow down and
the log grows with every tick. This bench seeds totesys, loads it once, then runs `--ticks` ticks of the
pipeline's plain functions in this process (extraction, every processed table, the warehouse loads; Dagster's
per-run overhead is measured by bench/run.py and does not change with the lake), with the lake maintenance
every `--maintain-every` ticks. Time is compressed: the retentions (vacuum's and the log's, 7 days in
production) are set to zero, so that each maintenance does what it would do once a week has passed.

Results go to bench/results/lake_ticks.json and, rendered, to the generated "Lake over many ticks" section of
BENCHMARKS.md (kept when bench/run.py regenerates the rest).

    .venv/bin/python bench/lake_ticks.py --ticks 1000
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402

from bench.approaches import BENCH_DIR, REPO_ROOT  # noqa: E402
from bench.workload import apply_tick  # noqa: E402
from totesys_platform.lake.delta import LakeZone  # noqa: E402
from totesys_platform.lake.ingestion.extract import extract_tables  # noqa: E402
from totesys_platform.lake.maintenance import maintain_table  # noqa: E402
from totesys_platform.lake.processed.runner import process_table, read_processed_changes  # noqa: E402
from totesys_platform.lake.writes import commit_write  # noqa: E402
from totesys_platform.local.postgres import LocalPostgres, free_port, new_temp_root  # noqa: E402
from totesys_platform.local import simulator  # noqa: E402
from totesys_platform.local.simulator import utc_now  # noqa: E402
from totesys_platform.source.contract import TABLE_NAMES  # noqa: E402
from totesys_platform.star_schema import TARGET_TABLES  # noqa: E402
from totesys_platform.warehouse.loader import load_table  # noqa: E402
from totesys_platform.warehouse.schema import ensure_schema, get_load_position, set_load_state  # noqa: E402

START, END = "<!-- lake-ticks:start -->", "<!-- lake-ticks:end -->"
WATCHED = {"ingestion": "sales_order", "processed": "fact_sales_order"}
ZERO = "interval 0 seconds"
LOAD_ORDER = sorted(TARGET_TABLES, key=lambda t: TARGET_TABLES[t].kind != "dimension")  # dimensions first


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


def load_warehouse(url: str, processed: LakeZone) -> None:
    """What the warehouse assets and the Postgres IO manager do, per table: the processed commits since the
    recorded position, merged with the new position in one transaction."""
    with psycopg.connect(url) as conn:
        for name in LOAD_ORDER:
            with conn.transaction():
                position = get_load_position(conn, name)
                now = processed.table(name).snapshot()
                if not now.exists or (position is not None and position.version == now.version):
                    continue
                data, _ = read_processed_changes(processed, name, position, now)
                mode = "append_versions" if TARGET_TABLES[name].kind == "fact" else "upsert"
                load_table(conn, name, data, mode)
                set_load_state(conn, name, now.position())


def run_once(source: str, warehouse: str, ingestion: LakeZone, processed: LakeZone) -> None:
    extract_tables(source, ingestion)
    for name in TARGET_TABLES:
        commit_write(process_table(name, ingestion, processed).write)
    load_warehouse(warehouse, processed)


def log_stats(zone: LakeZone, table: str) -> dict:
    """A table's log: every file in `_delta_log`, and what a reader opening the table reads (the newest
    checkpoint and the commits after it)."""
    root = Path(zone.table_uri(table)) / "_delta_log"
    files = [p for p in root.iterdir() if p.is_file()]
    checkpoint = json.loads((root / "_last_checkpoint").read_text())["version"] if (root / "_last_checkpoint").exists() else -1
    read = [p for p in files if (p.name.endswith(".json") and int(p.name.split(".")[0]) > checkpoint)
            or p.name.startswith(f"{checkpoint:020d}.checkpoint")]
    data_files = [p for p in Path(zone.table_uri(table)).rglob("*.parquet") if "_delta_log" not in p.parts]
    return {"log_files": len(files), "log_bytes": sum(p.stat().st_size for p in files),
            "read_files": len(read), "read_bytes": sum(p.stat().st_size for p in read),
            "data_files": len(data_files), "version": zone.table(table).snapshot().version}


def compress_time(zones: list[LakeZone]) -> None:
    for zone in zones:
        for table in [*TABLE_NAMES, *TARGET_TABLES]:
            now = zone.table(table).snapshot()
            if now.exists:
                now.delta.alter.set_table_properties(
                    {"delta.logRetentionDuration": ZERO, "delta.deletedFileRetentionDuration": ZERO})


def maintain(zones: dict[str, LakeZone]) -> float:
    started = time.perf_counter()
    for zone_name, zone in zones.items():
        for table in (TABLE_NAMES if zone_name == "ingestion" else TARGET_TABLES):
            maintain_table(zone.table(table), retention_hours=0)
    return time.perf_counter() - started


def seed_stack(server: LocalPostgres, scale: float) -> tuple[str, str]:
    """On `server`: totesys seeded at `scale` and an empty warehouse with its schema; their URLs."""
    for name in ("totesys", "warehouse"):
        server.create_database(name)
    source, warehouse = server.url("totesys"), server.url("warehouse")
    simulator.seed(source, scale=scale, seed=42, progress=lambda *a, **k: None)
    with psycopg.connect(warehouse, autocommit=True) as conn:
        ensure_schema(conn)
    return source, warehouse


def write_results(result: dict, name: str, results_dir: Path, output: Path, section: str, start: str = START,
                  end: str = END) -> None:
    """`result` as `<results_dir>/<name>.json`, and its rendered `section` spliced into the report `output`."""
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{name}.json").write_text(json.dumps(result, indent=1))
    splice(output.resolve(), section, start, end)
    log(f"wrote {output} and {results_dir / f'{name}.json'}")


def scales_main(argv: list[str] | None, doc: str, name: str, measure_scale, render, start: str, end: str) -> int:
    """The `main` of a bench measured at each of `--scales`: `measure_scale(scale, workdir)` per scale, then the
    results as `<name>.json` and the rendered section spliced into BENCHMARKS.md between `start` and `end`."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--scales", type=float, nargs="+", default=[10, 100], help="seed scales of totesys")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "BENCHMARKS.md", help="the report to update")
    parser.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results", help=f"where {name}.json goes")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds like Ctrl-C: the server is stopped
    rows = [measure_scale(scale, new_temp_root(f"{name.replace('_', '-')}-bench-{scale:g}-")) for scale in args.scales]
    result = {"when": datetime.now(timezone.utc).isoformat(timespec="minutes"), "scales": rows}
    write_results(result, name, args.results_dir, args.output, render(result), start, end)
    return 0


def run(args: argparse.Namespace) -> dict:
    workdir = new_temp_root("lake-ticks-")
    server = LocalPostgres(workdir / "pgdata", free_port()).start()
    try:
        log(f"seeding totesys at scale {args.scale:g}")
        source, warehouse = seed_stack(server, args.scale)
        zones = {"ingestion": LakeZone((workdir / "ingestion").as_uri()),
                 "processed": LakeZone((workdir / "processed").as_uri())}
        started = time.perf_counter()
        run_once(source, warehouse, zones["ingestion"], zones["processed"])
        log(f"initial load: {time.perf_counter() - started:.1f} s")
        compress_time(list(zones.values()))
        ticks, samples, maintenance = [], [], []
        # Data time moves as in production, one tick every --minutes-per-tick: the look-back window (15 minutes
        # of data time) then holds what production's does, not every tick of a compressed run.
        start = utc_now()
        for i in range(1, args.ticks + 1):
            apply_tick(source, orders=args.orders, payments_paid=args.payments, seed=i,
                       at=start + timedelta(minutes=args.minutes_per_tick * i))
            started = time.perf_counter()
            run_once(source, warehouse, zones["ingestion"], zones["processed"])
            ticks.append(time.perf_counter() - started)
            if i % args.maintain_every == 0:
                maintenance.append(maintain(zones))
            if i == 1 or i % args.sample_every == 0:
                samples.append({"tick": i, **{z: log_stats(zones[z], t) for z, t in WATCHED.items()}})
            if i % 50 == 0:
                log(f"tick {i}/{args.ticks}: median of the last 50 {statistics.median(ticks[-50:]):.2f} s")
        return {"when": datetime.now(timezone.utc).isoformat(timespec="minutes"), "scale": args.scale,
                "ticks": args.ticks, "orders": args.orders, "payments": args.payments,
                "maintain_every": args.maintain_every, "minutes_per_tick": args.minutes_per_tick,
                "tick_s": ticks, "maintenance_s": maintenance,
                "samples": samples}
    finally:
        server.stop()


def render(result: dict) -> str:
    ticks, window = result["tick_s"], min(50, len(result["tick_s"]))
    first, last = statistics.median(ticks[:window]), statistics.median(ticks[-window:])
    lines = [START, "## Lake over many ticks", "",
             f"Generated by `bench/lake_ticks.py --ticks {result['ticks']}` on {result['when'][:16]} UTC: scale "
             f"{result['scale']:g}, each tick {result['orders']} orders and {result['payments']} payments paid "
             f"{result['minutes_per_tick']:g} minutes of data time after the previous one, run "
             "through extraction, every processed table and the warehouse loads (plain functions, no Dagster), the "
             f"lake maintenance every {result['maintain_every']} ticks with the retentions compressed to zero.", "",
             f"Tick time: median {first:.2f} s over the first {window} ticks, {last:.2f} s over the last {window} "
             f"({(last / first - 1) * 100:+.0f}%). Maintenance of all {len(TABLE_NAMES) + len(TARGET_TABLES)} "
             "tables: median "
             f"{statistics.median(result['maintenance_s'] or [0]):.2f} s.", "",
             "| tick | zone | table version | files in _delta_log | KiB in _delta_log | files a reader opens | "
             "KiB a reader reads | data files |", "|---|---|---|---|---|---|---|---|"]
    for sample in result["samples"]:
        for zone, table in WATCHED.items():
            s = sample[zone]
            lines.append(f"| {sample['tick']} | {zone}/{table} | {s['version']} | {s['log_files']} | "
                         f"{s['log_bytes'] / 1024:.0f} | {s['read_files']} | {s['read_bytes'] / 1024:.0f} | "
                         f"{s['data_files']} |")
    lines += ["", END]
    return "\n".join(lines)


def splice(report: Path, section: str, start: str = START, end: str = END) -> None:
    """Put the section (between the markers `start` and `end`) into the report, replacing the previous one (before
    "## How to run" the first time)."""
    text = report.read_text() if report.exists() else "# Benchmarks\n"
    if start in text and end in text:
        text = text[:text.index(start)] + section + text[text.index(end) + len(end):]
    elif "## How to run" in text:
        text = text.replace("## How to run", section + "\n\n## How to run", 1)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    report.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--ticks", type=int, default=1000, help="ticks after the initial load")
    parser.add_argument("--scale", type=float, default=1, help="seed scale of totesys")
    parser.add_argument("--orders", type=int, default=10, help="new orders per tick")
    parser.add_argument("--payments", type=int, default=5, help="payments paid per tick")
    parser.add_argument("--maintain-every", type=int, default=20, help="ticks between lake maintenances")
    parser.add_argument("--minutes-per-tick", type=float, default=20, help="data time between two ticks")
    parser.add_argument("--sample-every", type=int, default=100, help="ticks between log measurements")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "BENCHMARKS.md", help="the report to update")
    parser.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results", help="where lake_ticks.json goes")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the bench's PostgreSQL server is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if min(args.ticks, args.maintain_every, args.sample_every) < 1:
        parser.error("--ticks, --maintain-every and --sample-every must be at least 1")
    result = run(args)
    write_results(result, "lake_ticks", args.results_dir, args.output, render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
