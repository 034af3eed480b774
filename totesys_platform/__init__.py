"""totesys-platform: totesys (PostgreSQL) -> Delta Lake ingestion and processed zones -> PostgreSQL warehouse,
operated by Dagster."""

import atexit
import gc
import importlib
import os
import platform
import sys


def _arrow_allocates_through_jemalloc() -> None:
    """Arrow's memory through its jemalloc rather than mimalloc, pyarrow's default, which keeps freed memory for
    the next big table: at scale 100 a run's peak is ~90 MiB lower (887-901 MiB instead of 980-991; the bar is
    1 GiB), in the same time. pyarrow picks its pool once, at import, from ARROW_DEFAULT_MEMORY_POOL, so this
    imports it with the variable set and then removes it: processes we start (the bench's comparators) keep
    their own default. A pool the user chose wins; so does a pyarrow imported earlier. Only where the wheels
    have jemalloc (Linux on x86_64); elsewhere pyarrow would warn and keep mimalloc anyway."""
    from totesys_platform.settings import is_set

    if ("pyarrow" in sys.modules or is_set("ARROW_DEFAULT_MEMORY_POOL")
            or sys.platform != "linux" or platform.machine() != "x86_64"):
        return
    os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "jemalloc"
    try:
        importlib.import_module("pyarrow")
    finally:
        os.environ.pop("ARROW_DEFAULT_MEMORY_POOL")


_arrow_allocates_through_jemalloc()

# A process ends with the interpreter's last garbage collection, which walks every object Dagster and the code
# location built: ~0.9 s at the end of each Dagster run process, ~0.6 s after a bare import (measured on the
# bench machine). It buys nothing here: what we write is committed or flushed explicitly, and Python does not
# promise finalizers at exit. Freezing at exit moves every object out of the collector's reach.
atexit.register(gc.freeze)
