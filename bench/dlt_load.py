"""dlt's extract-and-load of the totesys tables into PostgreSQL, for comparison.

`sql_database` source with the pyarrow backend, an incremental cursor on `last_updated` per table,
append write disposition (every version kept, like our ingestion zone), CSV load files (PostgreSQL
COPY: the fastest of dlt's PostgreSQL loaders that needs no extra driver). Extract and load only:
dlt builds no star schema. The same command does the initial load and every tick: dlt's own state
(in `--pipelines-dir` and the destination) decides what is new.

Runs in the bench's own virtualenv (bench/.venv-dlt, see run.py): dlt is not a project dependency.
Run: bench/.venv-dlt/bin/python bench/dlt_load.py --source URL --target URL --pipelines-dir DIR.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# This venv has dlt, not the project: the one redaction module is plain Python, imported from the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from totesys_platform.redaction import dsn_secrets, redact_text, redact_url  # noqa: E402

TABLES = ("address", "counterparty", "currency", "department", "design", "payment", "payment_type",
          "purchase_order", "sales_order", "staff", "transaction")


def run(source_url: str, target_url: str, pipelines_dir: str) -> dict:
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")  # no network from a benchmark
    # dlt's PostgreSQL credentials insist on a password; the bench's server trusts loopback and ignores it.
    if "@" in target_url and ":" not in target_url.split("://", 1)[1].split("@", 1)[0]:
        os.environ.setdefault("DESTINATION__POSTGRES__CREDENTIALS__PASSWORD", "unused-trust-auth")
    import dlt
    from dlt.sources.sql_database import sql_database

    started = time.monotonic()
    # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; dlt ships psycopg2.
    source = sql_database(credentials=source_url.replace("postgresql://", "postgresql+psycopg2://", 1), table_names=list(TABLES), backend="pyarrow",
                          reflection_level="full_with_precision")
    for table in TABLES:
        getattr(source, table).apply_hints(incremental=dlt.sources.incremental("last_updated"))
    pipeline = dlt.pipeline(pipeline_name="totesys_bench", pipelines_dir=pipelines_dir,
                            destination=dlt.destinations.postgres(credentials=target_url),
                            dataset_name="totesys_raw")
    info = pipeline.run(source, write_disposition="append", loader_file_format="csv")
    info.raise_on_failed_jobs()
    rows = pipeline.last_trace.last_normalize_info.row_counts if pipeline.last_trace.last_normalize_info else {}
    rows = {t: n for t, n in rows.items() if not t.startswith("_dlt")}
    return {"rows_loaded": sum(rows.values()), "rows": rows, "seconds": time.monotonic() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--pipelines-dir", required=True)
    args = parser.parse_args(argv)
    try:
        print(json.dumps(run(args.source, args.target, args.pipelines_dir), default=str))
    except Exception as err:  # noqa: BLE001 - dlt wraps everything; report it in one line, without secrets
        message = redact_text(str(err), [*dsn_secrets(args.source), *dsn_secrets(args.target)])
        print(f"dlt load from {redact_url(args.source)} to {redact_url(args.target)} failed: "
              f"{type(err).__name__}: {message[:2000]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
