"""The local stack's Dagster instance, as `make run` finds it at start (Dagster code, so it lives under defs/)."""

from __future__ import annotations

import os

import dagster as dg
from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter

from totesys_platform.local.stack import LocalStack


def fail_runs_left_in_progress(stack: LocalStack) -> list[str]:
    """Mark as failed every run the stack's Dagster instance still shows as starting, started or canceling.

    Called before `dagster dev` starts, when nothing can be running: such a run lost its worker
    (`make run` was killed hard, the machine stopped). Left alone it would hold the one-run queue.
    This also creates Dagster's tables in a new `dagster` database before the webserver and the
    daemon start together. Returns the ids of the runs it failed.
    """
    # The instance config reads DAGSTER_PG_URL from the environment; this process is the stack's.
    os.environ.update(stack.env())
    stuck = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
    with dg.DagsterInstance.from_config(str(stack.dagster_home)) as instance:
        runs = instance.get_runs(filters=RunsFilter(statuses=stuck))
        for run in runs:
            instance.report_run_failed(run, "The run's worker stopped with a previous `make run`; marked failed "
                                            "at the next start so the run queue is free.")
    return [run.run_id for run in runs]
