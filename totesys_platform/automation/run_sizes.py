"""How big a Fargate task each kind of run gets on ECS (deploy/dagster.ecs.yaml, EcsRunLauncher).

EcsRunLauncher reads a run's `ecs/cpu` and `ecs/memory` tags (CPU units, MiB) and sizes the run's task
with them; runs without them get the run task definition's default (deploy/terraform, run_default_size).
Every other run launcher, the local one of `make run` included, ignores these tags.

Sizes are valid Fargate pairs (512 CPU: 1-4 GiB, 1024: 2-8 GiB, 2048: 4-16 GiB, 4096: 8-30 GiB).
Plain data, no Dagster import.
"""

from __future__ import annotations

# name -> (CPU units, memory MiB)
RUN_SIZES: dict[str, tuple[int, int]] = {
    # A 20-minute tick or a sensor run: only the rows changed since the last run.
    "tick": (512, 2048),
    # The first load of an empty lake and warehouse: every row of every table, once.
    "initial_load": (2048, 8192),
    # The validation checks (validate; the whole history daily), lake compaction and vacuum.
    "whole_history": (1024, 4096),
    # Reloading the whole warehouse from the lake (rebuild_warehouse).
    "rebuild": (2048, 8192),
}


def ecs_tags(size: str) -> dict[str, str]:
    """The run tags that give a run the named size on ECS."""
    cpu, memory = RUN_SIZES[size]
    return {"ecs/cpu": str(cpu), "ecs/memory": str(memory)}
