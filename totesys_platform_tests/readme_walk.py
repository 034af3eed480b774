"""The README's command blocks, and running them as written, so that the docs and the code cannot drift apart.

Rules: a ```sh block is run with bash, as one script, in the checkout's folder; a ```sql block is run against
the warehouse; ```text (synopses with placeholders) and ```mermaid blocks are not commands. A block that
cannot run inside a test is listed in NOT_RUN with the reason, and NOT_RUN may only name blocks the README
still has, so a new block is run unless someone says why not.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg

PROJECT = Path(__file__).resolve().parents[1]
README = PROJECT / "README.md"
RUNNABLE = ("sh", "sql")
BLOCK_TIMEOUT_SECONDS = 600  # a run-once command waits in the run queue behind the sensor's runs

# The first line of a block (stripped) -> why the walk does not run it.
NOT_RUN = {
    "make run    # the whole platform on this machine; open http://127.0.0.1:3000, Ctrl-C stops everything":
        "`make run` is what the walk starts first (with its own folder and ports); `make test` runs the walk",
    "make run": "the walk runs inside this `make run`",
    'TOTESYS_LOCAL_DIR=/tmp/second TOTESYS_LOCAL_PG_PORT=54339 make run ARGS="--port 3001"':
        "a second platform: `make run` with the two variables and ARGS the walk itself uses for its own stack",
    "CREATE EXTERNAL TABLE fact_sales_order": "Athena DDL: needs AWS Athena",
}

_FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[A-Za-z]*)[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)


@dataclass(frozen=True)
class Block:
    lang: str
    text: str
    line: int  # in README.md, 1-based, of the opening fence

    @property
    def first_line(self) -> str:
        return self.text.strip().splitlines()[0].strip() if self.text.strip() else ""

    def __repr__(self) -> str:
        return f"README.md:{self.line} ```{self.lang} {self.first_line!r}"


def readme_blocks(text: str | None = None) -> list[Block]:
    text = README.read_text() if text is None else text
    blocks = []
    for match in _FENCE.finditer(text):
        indent = len(match["indent"])
        body = "\n".join(line[indent:] for line in match["body"].splitlines())
        blocks.append(Block(match["lang"], body + "\n", text.count("\n", 0, match.start()) + 1))
    return blocks


def blocks_to_run(blocks: list[Block]) -> list[Block]:
    return [b for b in blocks if b.lang in RUNNABLE and b.first_line not in NOT_RUN]


def stale_reasons(blocks: list[Block]) -> list[str]:
    """NOT_RUN entries naming no block of the README any more."""
    firsts = {b.first_line for b in blocks}
    return [first for first in NOT_RUN if first not in firsts]


def _sql_statements(text: str) -> list[str]:
    statements = [s.strip() for s in re.split(r";\s*$", text, flags=re.M)]
    return [s for s in statements if s and not all(line.strip().startswith("--") for line in s.splitlines())]


def run_block(block: Block, *, cwd: Path, env: dict[str, str], warehouse_url: str) -> str:
    """Run one block as written; returns its output, or fails naming the block and what it printed."""
    if block.lang == "sh":
        result = subprocess.run(["bash", "-e", "-c", block.text], cwd=cwd, env=env, capture_output=True, text=True,
                                timeout=BLOCK_TIMEOUT_SECONDS)
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"{block!r} exited with {result.returncode}:\n{output[-4000:]}"
        return output
    rows = []
    with psycopg.connect(warehouse_url, connect_timeout=10) as conn:
        for statement in _sql_statements(block.text):
            try:
                rows.append(conn.execute(statement).fetchall())
            except psycopg.Error as err:
                raise AssertionError(f"{block!r} failed on:\n{statement}\n{err}") from err
    return repr(rows)


def run_readme_blocks(*, cwd: Path, env: dict[str, str], warehouse_url: str) -> list[Block]:
    blocks = readme_blocks()
    assert not stale_reasons(blocks), f"NOT_RUN names blocks the README no longer has: {stale_reasons(blocks)}"
    ran = []
    for block in blocks_to_run(blocks):
        output = run_block(block, cwd=cwd, env=env, warehouse_url=warehouse_url)
        print(f"{block!r}: ok\n{output[-1500:]}")
        ran.append(block)
    return ran
