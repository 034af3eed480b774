"""moto in server mode as a subprocess on loopback: the real AWS HTTP APIs the tests talk to.

In its own process: delta-rs holds the GIL in some of its blocking calls, so an S3 served by a thread of the
test process would wait for the very call that waits for it."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from totesys_platform.local.postgres import free_port


@contextmanager
def moto_server(env: dict[str, str] | None = None) -> Iterator[str]:
    """A moto server on a free loopback port for the duration of the block; yields its endpoint URL."""
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start on port {port}") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
