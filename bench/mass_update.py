"""Extraction's memory for a mass update: every row of the biggest totesys table changed in one transaction
(issue 16: extraction memory stays bounded for a mass update).

For each `--scales` value: seeds totesys and archives it (plain functions), copies that lake once per variant,
then changes every `payment` row twice (a new version of each: `last_updated` moved; then in place:
`last_updated` kept) and measures the extraction of `payment` after each change, and the quiet run after the
first, in a process of its own (wall time, peak RSS of its process tree, the state its commit records):

- `bounded`: the defaults (at most 100,000 versions remembered; late rows looked up 100,000 at a time);
- `unbounded`: every version remembered and every late row looked up at once (the behaviour before).

Results go to bench/results/mass_update.json and, rendered, to the "Mass update" section of BENCHMARKS.md
(kept when bench/run.py regenerates the rest).

    .venv/bin/python bench/mass_update.py --scales 10 100
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402

from bench.approaches import BENCH_DIR, REPO_ROOT  # noqa: E402
from bench.lake_ticks import log, seed_stack, write_results  # noqa: E402
from bench.measure import run_measured  # noqa: E402
from bench.run import postmaster_pid  # noqa: E402
from totesys_platform.lake.delta import LakeZone  # noqa: E402
from totesys_platform.lake.ingestion.extract import extract_tables  # noqa: E402
from totesys_platform.local.postgres import LocalPostgres, free_port, new_temp_root  # noqa: E402

START, END = "<!-- mass-update:start -->", "<!-- mass-update:end -->"
TABLE = "payment"
UNBOUNDED = 10**12
VARIANTS = {"bounded": {}, "unbounded": {"remember_limit": UNBOUNDED, "late_chunk_rows": UNBOUNDED}}
# (what, the statement that makes it): each is followed by a measured extraction of TABLE
CHANGES = (
    ("mass update (new versions)", "UPDATE payment SET paid = NOT paid, last_updated = last_updated_max.ts "
     "FROM (SELECT max(last_updated) + interval '1 second' AS ts FROM payment) AS last_updated_max"),
    ("the next run, nothing changed", None),
    ("mass change in place (last_updated kept)", "UPDATE payment SET company_ac_number = company_ac_number + 1"),
)


def extract_once(source: str, lake: str, options: dict) -> None:
    """The measured process: one extraction of TABLE; prints what it archived and the size of its state."""
    zone = LakeZone(lake)
    result = extract_tables(source, zone, [TABLE], **options)[TABLE]
    state = zone.table(TABLE).snapshot().state
    print(json.dumps({"rows": result.rows, "late_rows": result.late_rows,
                      "state_bytes": len(json.dumps(state)), "remembered": len(state.get("versions", []))}))


def measure(env_source: str, lake: LakeZone, variant: str, server: LocalPostgres) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--extract-once", env_source, lake.url,
               json.dumps(VARIANTS[variant])]
    job = run_measured(command, cwd=REPO_ROOT, timeout=3600, server_pid=postmaster_pid(server))
    if not job.ok:
        raise SystemExit(f"the {variant} extraction failed: {job.error}")
    return {"wall_s": job.wall_s, "peak_rss_mib": job.peak_rss_mib, **json.loads(job.stdout.strip().splitlines()[-1])}


def measure_scale(scale: float, workdir: Path) -> dict:
    server = LocalPostgres(workdir / "pgdata", free_port()).start()
    try:
        log(f"scale {scale:g}: seeding, then archiving totesys")
        source, _ = seed_stack(server, scale)
        first = LakeZone((workdir / "lake").as_uri())
        extract_tables(source, first)
        lakes = {}
        for variant in VARIANTS:
            shutil.copytree(workdir / "lake", workdir / variant)
            lakes[variant] = LakeZone((workdir / variant).as_uri())
        with psycopg.connect(source) as conn:
            rows = conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]
        runs = []
        for what, statement in CHANGES:
            if statement:
                with psycopg.connect(source, autocommit=True) as conn:
                    conn.execute(statement)
            for variant, lake in lakes.items():
                measured = measure(source, lake, variant, server)
                log(f"scale {scale:g}, {what}, {variant}: {measured['rows']} rows in {measured['wall_s']:.1f} s, "
                    f"peak {measured['peak_rss_mib']:.0f} MiB, state {measured['state_bytes'] / 1024:.0f} KiB")
                runs.append({"change": what, "variant": variant, **measured})
        return {"scale": scale, "table_rows": rows, "runs": runs}
    finally:
        server.stop()


def render(result: dict) -> str:
    scales = " ".join(f"{r['scale']:g}" for r in result["scales"])
    lines = [START, "## Mass update", "",
             f"Generated by `bench/mass_update.py --scales {scales}` on {result['when'][:16]} UTC. Every `{TABLE}` "
             "row changed in one transaction, then extracted in a process of its own (wall time and the peak RSS "
             "of its process tree, the state its commit records): `bounded` is the extraction as it is (at most "
             "100,000 versions remembered, late rows looked up 100,000 at a time), `unbounded` remembers every "
             "version and looks every late row up at once (the behaviour before).", "",
             "| scale | rows | change | variant | rows archived | wall s | peak RSS MiB | state KiB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["scales"]:
        for run in r["runs"]:
            lines.append(f"| {r['scale']:g} | {r['table_rows']:,} | {run['change']} | {run['variant']} | "
                         f"{run['rows']:,} | {run['wall_s']:.1f} | {run['peak_rss_mib']:.0f} | "
                         f"{run['state_bytes'] / 1024:.0f} |")
    lines += ["", END]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--extract-once"]:
        extract_once(argv[1], argv[2], json.loads(argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--scales", type=float, nargs="+", default=[10, 100], help="seed scales of totesys")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "BENCHMARKS.md", help="the report to update")
    parser.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results", help="where mass_update.json goes")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds like Ctrl-C: the server is stopped
    rows = [measure_scale(scale, new_temp_root(f"mass-update-bench-{scale:g}-")) for scale in args.scales]
    result = {"when": datetime.now(timezone.utc).isoformat(timespec="minutes"), "scales": rows}
    write_results(result, "mass_update", args.results_dir, args.output, render(result), START, END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
