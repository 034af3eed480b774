"""Run-once commands: a job submitted to the Dagster instance the UI shows, through its run queue, and followed.

`totesys-platform etl|validate|report|materialize|rebuild|maintain` talk to the Dagster webserver's GraphQL API (the
one the UI uses), so a run waits in the same one-run-at-a-time queue as the schedule's and the sensor's, shows
in the UI's Runs page, and runs in the deployment's code location with its environment. The webserver is
the one `make run` started (its address is kept in the local folder) or DAGSTER_UI_URL (a deployment's).
No Dagster definitions are imported here: only the GraphQL client.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import requests

from totesys_platform.settings import DEFAULT_UI_URL

Progress = Callable[[str], None]

# The command names and the jobs each runs, in order (a failed run stops the sequence).
COMMAND_JOBS: dict[str, tuple[str, ...]] = {
    "etl": ("totesys_etl",),
    "validate": ("validate",),
    "report": ("refresh_sales_report",),
    "materialize": ("totesys_etl", "refresh_sales_report", "validate"),
    "rebuild": ("rebuild_warehouse",),
    "maintain": ("lake_maintenance",),
}
# `validate --full`: the tag the daily validate_in_full_daily schedule puts on its runs (defs/automation/checks.py).
FULL_VALIDATION_TAGS = {"totesys/validation": "full"}
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}
GRAPHQL_TIMEOUT_SECONDS = 30

_RUN_QUERY = """
query RunProgress($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status stepStats { stepKey status } }
    ... on PythonError { message }
    ... on RunNotFoundError { message }
  }
}"""

_FAILURES_QUERY = """
query RunFailures($runId: ID!, $cursor: String) {
  logsForRun(runId: $runId, afterCursor: $cursor, limit: 1000) {
    __typename
    ... on EventConnection {
      cursor hasMore
      events {
        __typename
        ... on ExecutionStepFailureEvent { stepKey message error { message cause { message cause { message } } } }
        ... on RunFailureEvent { message error { message cause { message } } }
      }
    }
  }
}"""


class RunOnceError(RuntimeError):
    """A run-once command cannot submit or follow its run; the message says why and what to do."""


@dataclass
class RunOutcome:
    job: str
    run_id: str
    status: str
    url: str
    failures: list[str] = field(default_factory=list)  # "step: first line of its error", the run's own last
    failed_steps: int = 0

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCESS"

    def summary(self) -> str:
        """One line for a finished run; a failure names the first failed step and its error's first line."""
        if self.succeeded:
            return f"run {self.run_id} of {self.job} succeeded"
        verb = {"FAILURE": "failed", "CANCELED": "was canceled"}.get(self.status, self.status.lower())
        counted = f" ({self.failed_steps} steps failed)" if self.failed_steps > 1 else ""
        reason = f": {self.failures[0]}" if self.failures else ""
        return f"run {self.run_id} of {self.job} {verb}{counted}{reason}"


def ui_url_file(local_dir: Path) -> Path:
    """Where `make run` keeps the address of the UI it serves (removed when it stops)."""
    return Path(local_dir) / "ui_url"


def resolve_ui_url(env: dict[str, str] | None = None) -> str:
    """DAGSTER_UI_URL if set (a deployment's webserver), else the UI a running `make run` serves, else :3000."""
    from totesys_platform import settings

    env = dict(os.environ if env is None else env)
    if url := settings.setting("DAGSTER_UI_URL", env):
        return url.rstrip("/")
    try:
        return ui_url_file(settings.local_dir(env)).read_text().strip().rstrip("/") or DEFAULT_UI_URL
    except OSError:
        return DEFAULT_UI_URL


def _first_line(text: str | None) -> str:
    text = (text or "").strip()
    return text.splitlines()[0].strip() if text else ""


def _error_line(text: str | None) -> str:
    """The first line of a serialized Python error, its class without the module path."""
    line = _first_line(text)
    head, sep, rest = line.partition(": ")
    if sep and "." in head and " " not in head:
        return f"{head.rsplit('.', 1)[1]}: {rest}"
    return line


class DagsterUI:
    """The webserver at `url`: submits jobs (DagsterGraphQLClient) and reads a run's progress and failures."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        parsed = urllib.parse.urlsplit(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise RunOnceError(f"DAGSTER_UI_URL {url!r} is not an http(s) address like {DEFAULT_UI_URL}")
        self._parsed = parsed

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/server_info", timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def require(self) -> None:
        if not self.answers():
            raise RunOnceError(
                f"no Dagster webserver answers at {self.url}: start the platform with `make run` "
                "(or set DAGSTER_UI_URL to your deployment's webserver)")

    def submit(self, job: str, tags: dict[str, str] | None = None) -> str:
        from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

        parsed = self._parsed
        client = DagsterGraphQLClient(parsed.hostname, port_number=parsed.port, use_https=parsed.scheme == "https",
                                      timeout=GRAPHQL_TIMEOUT_SECONDS, path_prefix=parsed.path.rstrip("/"))
        try:
            # The job's own config and tags apply, as for a run its schedule starts.
            return client.submit_job_execution(job, tags=tags)
        except DagsterGraphQLClientError as err:
            detail = _first_line(str(err.body) if err.body else "") or _first_line(str(err))
            raise RunOnceError(f"the webserver at {self.url} refused a run of {job}: {detail}") from None

    def _query(self, query: str, variables: dict) -> dict:
        try:
            response = requests.post(f"{self.url}/graphql", json={"query": query, "variables": variables},
                                     timeout=GRAPHQL_TIMEOUT_SECONDS)
            response.raise_for_status()
            body = response.json()
        except (requests.RequestException, ValueError) as err:
            raise RunOnceError(f"lost the Dagster webserver at {self.url} ({_first_line(str(err))}); the run "
                               "goes on: follow it in the UI (Runs)") from None
        if body.get("errors"):
            raise RunOnceError(f"the webserver at {self.url} answered: {_first_line(body['errors'][0].get('message'))}")
        return body["data"]

    def progress(self, run_id: str) -> tuple[str, list[tuple[str, str]]]:
        """The run's status and its steps' (key, status) so far."""
        result = self._query(_RUN_QUERY, {"runId": run_id})["runOrError"]
        if result["__typename"] != "Run":
            raise RunOnceError(f"run {run_id} is not in the instance at {self.url}: {_first_line(result.get('message'))}")
        return result["status"], [(s["stepKey"], s["status"]) for s in result["stepStats"] or []]

    def failures(self, run_id: str) -> list[str]:
        """The failed steps' errors (the innermost cause, first line), then the run's own failure message."""
        found, cursor = [], None
        while True:
            logs = self._query(_FAILURES_QUERY, {"runId": run_id, "cursor": cursor})["logsForRun"]
            if logs["__typename"] != "EventConnection":
                return found
            for event in logs["events"]:
                kind = event.get("__typename")
                if kind not in ("ExecutionStepFailureEvent", "RunFailureEvent"):
                    continue
                error, message = event.get("error"), event.get("message")
                while error and error.get("cause"):
                    error = error["cause"]
                text = _error_line(error["message"] if error else message) or _first_line(message)
                found.append(f"{event['stepKey']}: {text}" if event.get("stepKey") else text)
            if not logs["hasMore"]:
                return found
            cursor = logs["cursor"]


def run_job(ui: DagsterUI, job: str, *, progress: Progress, wait: bool = True, poll_seconds: float = 1.0,
            tags: dict[str, str] | None = None) -> RunOutcome:
    """Submit `job` (with `tags` besides its own) through the webserver's run queue; with `wait`, report it step
    by step until it finishes."""
    run_id = ui.submit(job, tags)
    url = f"{ui.url}/runs/{run_id}"
    progress(f"{job}: run {run_id} submitted ({url})")
    if not wait:
        return RunOutcome(job, run_id, "QUEUED", url)
    status, reported, started = None, set(), time.monotonic()
    while True:
        new_status, steps = ui.progress(run_id)
        if new_status != status and new_status not in FINISHED:
            progress(f"{job}: {new_status.lower().replace('_', ' ')}"
                     + (" (the instance runs one at a time)" if new_status == "QUEUED" else ""))
        status = new_status
        for key, step_status in steps:
            if step_status in ("SUCCESS", "FAILURE", "SKIPPED") and key not in reported:
                reported.add(key)
                progress(f"  {step_status.lower():8} {key}")
        if status in FINISHED:
            break
        time.sleep(poll_seconds)
    outcome = RunOutcome(job, run_id, status, url)
    if not outcome.succeeded:
        outcome.failures = ui.failures(run_id)
        outcome.failed_steps = sum(1 for _key, step_status in steps if step_status == "FAILURE")
    progress(f"{job}: {status.lower()} in {time.monotonic() - started:.0f} s")
    return outcome


def run_command(command: str, *, ui_url: str | None = None, wait: bool = True, progress: Progress = print,
                tags: dict[str, str] | None = None) -> list[RunOutcome]:
    """The jobs of a run-once command, one after the other; stops at the first that does not succeed."""
    ui = DagsterUI(ui_url or resolve_ui_url())
    ui.require()
    outcomes = []
    for job in COMMAND_JOBS[command]:
        outcome = run_job(ui, job, progress=progress, wait=wait, tags=tags)
        outcomes.append(outcome)
        if wait and not outcome.succeeded:
            break
    return outcomes
