"""Run one command as a child process and measure it: wall time, CPU time and peak RSS of its process tree.

Plain Python (psutil, no Dagster). Every approach of the benchmark is measured the same way, as a
separate process tree started from here, so interpreter start-up and imports count for all of them.
"""

from __future__ import annotations

import os
import resource
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

SAMPLE_INTERVAL_S = 0.05


@dataclass
class Measurement:
    """What one run of one command cost. `ok` is False if it exited non-zero or timed out."""

    wall_s: float
    cpu_s: float  # user + system of the whole tree (children reaped by their parents included)
    server_cpu_s: float | None  # user + system of the PostgreSQL server's processes during the run (sampled)
    peak_rss_bytes: int  # highest sampled sum of RSS over the process and all its descendants
    returncode: int | None
    ok: bool
    load_before: float  # 1-minute load average when the run started: context for a noisy machine
    stdout: str = ""
    stderr: str = ""
    error: str = ""

    @property
    def peak_rss_mib(self) -> float:
        return self.peak_rss_bytes / 2**20


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass  # exited between listing and sampling
    return total


def _server_cpu(server_pid: int) -> dict[int, float]:
    """CPU seconds so far of the postmaster and each of its children (backends, workers, writers)."""
    try:
        server = psutil.Process(server_pid)
        procs = [server, *server.children()]
    except psutil.Error:
        return {}
    out = {}
    for p in procs:
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.Error:
            pass
    return out


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_measured(
    command: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float | None = None,
    log_path: Path | None = None,
    server_pid: int | None = None,
) -> Measurement:
    """Run `command` to completion and measure it. Output is captured (and written to `log_path` if given)."""
    load_before = os.getloadavg()[0]
    # Server processes are sampled like the tree: a backend's CPU is its last value seen before it exited.
    server_start = _server_cpu(server_pid) if server_pid else {}
    server_seen = dict(server_start)
    cpu_before = _children_cpu()
    started = time.monotonic()
    proc = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        errors="replace", start_new_session=True,
    )
    ps_proc = psutil.Process(proc.pid)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _tree_rss(ps_proc))
            if server_pid:
                server_seen.update(_server_cpu(server_pid))
            stop.wait(SAMPLE_INTERVAL_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    error = ""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # Our own child's session only: never anything else on the machine.
        os.killpg(proc.pid, 9)
        stdout, stderr = proc.communicate()
        error = f"timed out after {timeout:.0f} s"
    except BaseException:
        # Interrupted (Ctrl-C, SIGTERM): the child runs in its own session, so end it here.
        os.killpg(proc.pid, 9)
        proc.wait()
        stop.set()
        raise
    wall = time.monotonic() - started
    stop.set()
    sampler.join()
    cpu = _children_cpu() - cpu_before
    server_cpu = None
    if server_pid:
        server_seen.update(_server_cpu(server_pid))
        server_cpu = sum(v - server_start.get(pid, 0.0) for pid, v in server_seen.items())
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(f"$ {' '.join(command)}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n")
    ok = proc.returncode == 0 and not error
    if not ok and not error:
        tail = (stderr or stdout).strip().splitlines()[-12:]
        error = f"exit code {proc.returncode}: " + " | ".join(tail)
    return Measurement(wall, cpu, server_cpu, peak, proc.returncode, ok, load_before, stdout, stderr, error)
