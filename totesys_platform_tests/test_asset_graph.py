"""A snapshot of the whole Dagster graph: assets and their deps and groups, checks, jobs and what they select,
schedules and sensors. A change to the graph shows as a diff of fixtures/asset_graph.txt, so it is always
deliberate: after reviewing it, regenerate the file with
`UPDATE_GRAPH_SNAPSHOT=1 .venv/bin/python -m pytest totesys_platform_tests/test_asset_graph.py`."""

from __future__ import annotations

import os
from pathlib import Path

SNAPSHOT = Path(__file__).parent / "fixtures" / "asset_graph.txt"


def _name(key) -> str:
    return key.to_user_string()


def graph_snapshot() -> str:
    from totesys_platform.definitions import defs

    graph = defs.resolve_asset_graph()
    lines = ["# assets: key [group] <- deps"]
    for key in sorted(graph.get_all_asset_keys(), key=_name):
        node = graph.get(key)
        deps = ", ".join(sorted(_name(p) for p in node.parent_keys)) or "-"
        lines.append(f"{_name(key)} [{node.group_name}] <- {deps}")
    lines.append("# checks: asset:check")
    lines += sorted(f"{_name(k.asset_key)}:{k.name}" for k in graph.asset_check_keys)
    lines.append("# jobs: name: assets | checks | ops")
    for job in sorted(defs.jobs, key=lambda j: j.name):
        resolved = defs.resolve_job_def(job.name)
        layer = resolved.asset_layer
        # A job of checks only (validate) is not an "asset job" to Dagster, but its layer holds its checks.
        checks = sorted(f"{_name(k.asset_key)}:{k.name}" for k in layer.asset_graph.asset_check_keys)
        assets = sorted(_name(k) for k in layer.selected_asset_keys) if resolved.is_asset_job else []
        ops = [] if resolved.is_asset_job or checks else sorted(n.name for n in resolved.graph.nodes)
        lines.append(f"{job.name}: {len(assets)} assets {assets} | {len(checks)} checks {checks} | ops {ops}")
    lines.append("# schedules: name: cron -> job")
    lines += sorted(f"{s.name}: {s.cron_schedule} -> {s.job_name}" for s in defs.schedules)
    lines.append("# sensors")
    lines += sorted(s.name for s in defs.sensors)
    return "\n".join(lines) + "\n"


def test_the_asset_graph_is_the_reviewed_one():
    current = graph_snapshot()
    if os.environ.get("UPDATE_GRAPH_SNAPSHOT") == "1":
        SNAPSHOT.write_text(current)
    expected = SNAPSHOT.read_text() if SNAPSHOT.exists() else ""
    assert current == expected, (
        "the Dagster graph changed; review the difference, then regenerate "
        f"{SNAPSHOT.relative_to(Path.cwd()) if SNAPSHOT.is_relative_to(Path.cwd()) else SNAPSHOT} "
        "with UPDATE_GRAPH_SNAPSHOT=1 (see this module's docstring)")


def test_no_module_outside_defs_imports_dagster():
    """All Dagster code lives in totesys_platform/defs (and definitions.py, which collects it): every other
    module is plain Python, importable and testable without Dagster."""
    import subprocess
    import sys

    probe = """
import importlib, pkgutil, sys
import totesys_platform
plain = [m.name for m in pkgutil.walk_packages(totesys_platform.__path__, "totesys_platform.")
         if not m.name.startswith(("totesys_platform.defs", "totesys_platform.definitions"))]
for name in plain:
    importlib.import_module(name)
print(len(plain), sorted(m for m in sys.modules if m == "dagster" or m.startswith("dagster.")))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    count, loaded = out.split(" ", 1)
    assert int(count) > 40 and loaded.strip() == "[]", f"a module outside defs/ imports Dagster: {loaded[:300]}"
