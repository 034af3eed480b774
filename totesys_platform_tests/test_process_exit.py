"""A process that imported the platform skips the interpreter's last garbage collection (totesys_platform/__init__.py):
at exit every object is frozen out of the collector's reach, so the walk over Dagster's objects does not happen."""

import subprocess
import sys

# atexit runs handlers last-registered first: this one, registered before the import, runs after the platform's.
PROBE = ("import atexit, gc; atexit.register(lambda: print('frozen at exit:', gc.get_freeze_count())); "
         "import totesys_platform, dagster; print('frozen before exit:', gc.get_freeze_count())")


def test_objects_are_frozen_at_exit_and_not_before():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    before, at_exit = (int(line.rsplit(":", 1)[1]) for line in done.stdout.splitlines())
    assert before == 0  # the collector works as usual while the process runs
    assert at_exit > 10_000  # importing Dagster alone leaves over a hundred thousand tracked objects
