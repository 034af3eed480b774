"""`make run`: the local stack, a live simulator and `dagster dev`, supervised as one foreground process.

Start order: stack up (PostgreSQL, databases, seed if empty) -> simulator -> dagster dev -> wait for
the UI -> print its URL. On Ctrl-C (SIGINT), SIGTERM or SIGHUP everything stops in reverse order:
simulator, dagster dev (webserver, daemon, code server and any run it launched), then PostgreSQL.
A second signal during shutdown kills what is left at once.

Each child runs in its own process group, so a Ctrl-C in the terminal reaches only this supervisor
and the shutdown happens in order; the children get default signal dispositions (dagster dev
started with SIGINT ignored would ignore SIGTERM too, see the platform notes). Whatever remains in
a child's process group after it exits is terminated, so nothing is left behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from totesys_platform import settings
from totesys_platform.local.stack import LocalStack
from totesys_platform.run_once import ui_url_file

Progress = Callable[[str], None]

UI_TIMEOUT_SECONDS = 240.0  # dagster dev answers in ~10 s on an idle machine; loading can be slow on a busy one
# How long a child's leader gets to stop by itself before its whole group is terminated. dagster dev
# alone waits for a run in progress; the group's SIGTERM interrupts that run (it is marked failed).
GRACEFUL_STOP_SECONDS = 5.0


class LaunchError(RuntimeError):
    """`make run` cannot start; the message says why and what to do."""


class _Child:
    """A child process in its own process group, stopped with a signal and then, if need be, killed."""

    def __init__(self, name: str, args: list[str], *, env: dict[str, str], cwd: Path, log: Path | None):
        self.name = name
        self.log = log
        self.exit_reported = False
        out = open(log, "wb") if log else None
        try:
            self.process = subprocess.Popen(
                args, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out or None,
                stderr=subprocess.STDOUT if out else None, process_group=0,
            )
        finally:
            if out:
                out.close()  # the child holds its own descriptor
        self.pgid = self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def group_alive(self) -> bool:
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # a process of another user in the group still counts
            return True
        return True

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.pgid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float, force: threading.Event) -> float:
        """SIGTERM the leader, wait, then clean up the whole group (SIGTERM, then SIGKILL); returns seconds."""
        started = time.monotonic()
        if self.running():
            self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.running() and time.monotonic() < deadline and not force.is_set():
            time.sleep(0.1)
        # The leader is gone (or too slow): nothing of its group may outlive it.
        for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 2.0)):
            if not self.group_alive():
                break
            self.signal_group(sig)
            until = time.monotonic() + (0 if force.is_set() and sig == signal.SIGTERM else grace)
            while self.group_alive() and time.monotonic() < until:
                time.sleep(0.1)
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
        return time.monotonic() - started

    def log_tail(self, lines: int = 25) -> str:
        if not self.log or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _ui_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def convert_old_lake(ingestion_url: str, progress: Progress) -> None:
    """A lake written by the code before Delta Lake is converted once, before anything runs against it."""
    from totesys_platform.lake.convert import convert_ingestion_zone, needs_conversion
    from totesys_platform.lake.delta import LakeZone

    zone = LakeZone(ingestion_url)
    if needs_conversion(zone):
        progress(f"converting the lake in {zone.url} to Delta Lake (once; nothing is extracted again)")
        convert_ingestion_zone(zone, say=progress)



def child_environment(base_env: dict[str, str], stack: LocalStack, host: str, port: int) -> dict[str, str]:
    """The environment of `make run`'s children: the stack's settings, and the UI's own address for the links
    in failure alerts (whatever port the UI was given)."""
    return {**base_env, **stack.env(), "DAGSTER_UI_URL": f"http://{host}:{port}", "PYTHONUNBUFFERED": "1"}


def run(
    *,
    port: int = 3000,
    host: str = "127.0.0.1",
    with_simulator: bool = True,
    seed_scale: float = 1.0,
    orders_per_minute: float = 2.0,
    env: dict[str, str] | None = None,
    progress: Progress = print,
) -> int:
    """Run the whole local platform in the foreground until a signal; returns the exit code."""
    base_env = dict(os.environ if env is None else env)
    stack = LocalStack.from_env(base_env)
    if not _port_free(host, port):
        raise LaunchError(f"port {port} on {host} is in use (another `make run`?): stop it, or choose "
                          f"another port with `totesys-platform run --port N` (make run ARGS='--port N').")
    stop, force = threading.Event(), threading.Event()
    received: list[str] = []

    def on_signal(signum, _frame):
        received.append(signal.Signals(signum).name)
        (force if stop.is_set() else stop).set()

    # During `stack up` a signal interrupts the seeding (it rolls back) like a Ctrl-C would.
    previous = {sig: signal.signal(sig, signal.default_int_handler)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    children: list[_Child] = []
    try:
        try:
            stack.up(seed_scale, progress=progress)
        except KeyboardInterrupt:
            progress("interrupted while starting: stopping the local stack")
            return 130
        from totesys_platform.defs.instance import fail_runs_left_in_progress  # the one Dagster call here

        for run_id in fail_runs_left_in_progress(stack):
            progress(f"run {run_id} was left in progress by a previous `make run`: marked failed")
        convert_old_lake(stack.env()["LAKE_INGESTION_URL"], progress)
        # From here a signal only asks for an orderly stop. Handlers are installed before any child
        # starts, so each child begins with default dispositions (a handled signal is reset on exec).
        for sig in previous:
            signal.signal(sig, on_signal)
        child_env = child_environment(base_env, stack, host, port)
        if with_simulator:
            children.append(_Child(
                "simulator",
                [sys.executable, "-m", "totesys_platform.cli", "simulate",
                 "--orders-per-minute", str(orders_per_minute), "--interval", "5"],
                env=child_env, cwd=settings.project_root(), log=None,
            ))
        workspace = settings.project_root() / "workspace.yaml"
        dagster_log = stack.logs_dir / "dagster.log"
        # cwd = DAGSTER_HOME: dagster dev warns about a dagster.yaml in its cwd that is not DAGSTER_HOME.
        dagster = _Child(
            "dagster dev",
            [sys.executable, "-m", "dagster", "dev", "-w", str(workspace), "-h", host, "-p", str(port)],
            env=child_env, cwd=stack.dagster_home, log=dagster_log,
        )
        children.append(dagster)
        progress(f"dagster dev starting (log: {dagster_log})")
        url = f"http://{host}:{port}"
        deadline = time.monotonic() + UI_TIMEOUT_SECONDS
        while not stop.is_set() and not _ui_answers(url):
            if not dagster.running():
                progress(f"dagster dev exited with code {dagster.process.returncode} before its UI answered. "
                         f"Last lines of {dagster_log}:\n{dagster.log_tail()}")
                return 1
            if time.monotonic() > deadline:
                progress(f"the Dagster UI did not answer within {UI_TIMEOUT_SECONDS:.0f} s; see {dagster_log}")
                return 1
            stop.wait(0.5)
        if not stop.is_set():
            # Run-once commands (`totesys-platform etl`, ...) find this UI here, whatever its port.
            ui_url_file(stack.root).write_text(url + "\n")
            progress(f"Dagster UI: {url}")
            progress("Ctrl-C stops everything (simulator, Dagster, PostgreSQL); the data stays in "
                     f"{stack.root}.")
        exit_code = 0
        while not stop.wait(1.0):
            if not dagster.running():
                progress(f"dagster dev exited unexpectedly (code {dagster.process.returncode}); "
                         f"last lines of {dagster_log}:\n{dagster.log_tail()}")
                exit_code = 1
                break
            for child in children:
                if child is not dagster and not child.running() and not child.exit_reported:
                    child.exit_reported = True
                    progress(f"warning: the {child.name} stopped (code {child.process.returncode}); "
                             "Dagster keeps running")
        if received:
            progress(f"{received[0]} received: stopping")
        return exit_code
    finally:
        ui_url_file(stack.root).unlink(missing_ok=True)
        for sig in previous:
            signal.signal(sig, on_signal)
        for child in children:  # started first, stopped first: the simulator, then dagster dev
            seconds = child.stop(GRACEFUL_STOP_SECONDS, force)
            progress(f"{child.name} stopped ({seconds:.1f} s)")
        try:
            stack.down(progress=progress)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
