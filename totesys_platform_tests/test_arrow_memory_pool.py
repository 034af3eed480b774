"""Arrow's memory pool: jemalloc for our processes (a lower peak at scale 100, see totesys_platform/__init__.py),
never forced on the processes we start, and never over the user's own choice."""

import os
import platform
import subprocess
import sys

import pytest

PROBE = ("import os, totesys_platform, pyarrow as pa; "
         "print(pa.default_memory_pool().backend_name, os.environ.get('ARROW_DEFAULT_MEMORY_POOL', '-'))")


def probe(**env: str) -> list[str]:
    environment = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"} | env
    done = subprocess.run([sys.executable, "-c", PROBE], env=environment, capture_output=True, text=True, check=True)
    return done.stdout.split()


@pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64", reason="jemalloc: Linux x86_64 wheels")
def test_arrow_allocates_through_jemalloc_without_leaving_the_setting_to_child_processes():
    assert probe() == ["jemalloc", "-"]


def test_a_pool_the_user_chose_wins():
    assert probe(ARROW_DEFAULT_MEMORY_POOL="system") == ["system", "system"]
