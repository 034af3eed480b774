"""The schedule, the new-data sensor and the shape of the asset graph."""

from __future__ import annotations

import time
from datetime import date

import dagster as dg
import psycopg
import pytest

from totesys_platform.automation import change_detection as cd
from totesys_platform.defs.automation.jobs import (
    downstream_of,
    etl_schedule,
    totesys_new_data_sensor,
)
from totesys_platform.defs.automation.checks import VALIDATION_TAG
from totesys_platform.defs.resources import TotesysDatabase
from totesys_platform.local import simulator
from totesys_platform.source.contract import TABLE_NAMES
from totesys_platform.star_schema import TARGET_TABLES


def test_changed_tables_compares_counters():
    assert cd.changed_tables(None, {"a": 1, "b": 2}) == ["a", "b"]
    assert cd.changed_tables({"a": 1, "b": 2}, {"a": 1, "b": 2}) == []
    assert cd.changed_tables({"a": 1, "b": 2}, {"a": 1, "b": 3}) == ["b"]
    # A counter reset (server restart, pg_stat_reset) reads as a change: one harmless extra run.
    assert cd.changed_tables({"a": 10}, {"a": 0}) == ["a"]


@pytest.mark.parametrize("cursor", [None, "", "not json", "[1, 2]"])
def test_a_missing_or_corrupt_cursor_means_everything_may_have_changed(cursor):
    assert cd.decode_cursor(cursor) is None


def test_cursor_round_trip():
    assert cd.decode_cursor(cd.encode_cursor({"b": 2, "a": 1})) == {"a": 1, "b": 2}


def test_schedule_runs_the_whole_pipeline_every_20_minutes():
    assert etl_schedule.cron_schedule == "*/20 * * * *"
    assert etl_schedule.job_name == "totesys_etl"


def _graph():
    from totesys_platform.definitions import defs

    return defs.resolve_asset_graph()


def test_a_payment_change_selects_what_is_downstream_of_payment_only():
    keys = {k.to_user_string() for k in downstream_of(["payment"], _graph())}
    assert "lake/ingestion/payment" in keys
    assert {"lake/processed/fact_payment", "warehouse/fact_payment", "warehouse/dim_date"} <= keys
    assert "warehouse/fact_sales_order" not in keys and "lake/ingestion/sales_order" not in keys
    assert "analytics/sales_report" not in keys  # hourly, refresh_sales_report


def test_a_dimension_change_selects_its_dimension_not_the_facts_that_load_after_it():
    keys = {k.to_user_string() for k in downstream_of(["staff", "department"], _graph())}
    assert keys == {"lake/ingestion/staff", "lake/ingestion/department", "lake/processed/dim_staff",
                    "warehouse/dim_staff"}


def _insert_currency(url: str) -> None:
    # Closing the connection makes the backend flush its activity counters.
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO currency (currency_code, last_updated) VALUES ('JPY', now())")


def _tick(instance, url, cursor):
    from totesys_platform.definitions import defs

    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"totesys": TotesysDatabase(db_url=url)},
                                  definitions=defs)
    return totesys_new_data_sensor(ctx), ctx


def test_sensor_requests_a_run_for_a_change_and_skips_when_nothing_changed(totesys_url):
    instance = dg.DagsterInstance.ephemeral()
    first, _ = _tick(instance, totesys_url, None)
    assert isinstance(first, dg.SensorResult) and len(first.run_requests) == 1
    cursor = first.cursor

    quiet, _ = _tick(instance, totesys_url, cursor)
    assert isinstance(quiet, dg.SkipReason)

    _insert_currency(totesys_url)
    (request,) = _next_request(instance, totesys_url, cursor).run_requests
    selected = {k.to_user_string() for k in request.asset_selection}
    assert "lake/ingestion/currency" in selected and "warehouse/dim_currency" in selected
    assert "lake/ingestion/sales_order" not in selected
    assert request.tags["totesys/changed_tables"] == "currency"


def _next_request(instance, url, cursor) -> dg.SensorResult:
    """The sensor's next tick that sees a change (the activity counters reach the sensor within moments)."""
    deadline = time.monotonic() + 15
    while True:
        result, _ = _tick(instance, url, cursor)
        if isinstance(result, dg.SensorResult) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert isinstance(result, dg.SensorResult), "the sensor never saw the committed change"
    return result


def _evaluated_checks(result: dg.ExecuteInProcessResult) -> set[tuple[str, str]]:
    return {(e.asset_key.path[-1], e.check_name) for e in result.get_asset_check_evaluations()}


def _materialised(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def test_sensor_and_schedule_runs_evaluate_only_the_ticks_checks(totesys_url, warehouse_url, tmp_path):
    """Runs launched the way Dagster's daemon launches them (the job subset to the RunRequest's assets and
    checks, as the run worker does) evaluate the blocking references_resolve of the facts they load and none of
    the hourly whole-history, reconciliation, source or schema checks; so does a run of the schedule."""
    from totesys_platform.defs.automation.jobs import totesys_etl
    from totesys_platform.definitions import defs
    from totesys_platform_tests.test_pipeline import resources

    simulator.seed(totesys_url, scale=0.02, seed=7, end=date(2023, 6, 30), progress=lambda *a, **k: None)
    local = dg.Definitions(
        assets=defs.assets, asset_checks=defs.asset_checks, jobs=[totesys_etl],
        resources=resources(totesys_url, warehouse_url, (tmp_path / "ingestion").as_uri(),
                            (tmp_path / "processed").as_uri()),
    )
    job = local.resolve_job_def("totesys_etl")
    instance = dg.DagsterInstance.ephemeral()

    def launch(request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        subset = job.get_subset(asset_selection=set(request.asset_selection), asset_check_selection=(
            None if request.asset_check_keys is None else set(request.asset_check_keys)))  # None: every check on them
        return subset.execute_in_process(instance=instance)

    every_fact = {(fact, "references_resolve") for fact in ("fact_sales_order", "fact_purchase_order", "fact_payment")}
    captures = lambda *tables: {(t, "versions_move_forward") for t in tables}  # noqa: E731 - free: the extraction's
    first = _next_request(instance, totesys_url, None)  # the first tick: every table, every fact
    (request,) = first.run_requests
    result = launch(request)
    assert "warehouse/fact_payment" in _materialised(result)
    assert _evaluated_checks(result) == every_fact | captures(*TABLE_NAMES)

    # A changed payment: the payment lineage loads, and only fact_payment's references are checked.
    with psycopg.connect(totesys_url) as conn:
        conn.execute("UPDATE payment SET paid = NOT paid, last_updated = now() "
                     "WHERE payment_id = (SELECT min(payment_id) FROM payment)")
    payment = _next_request(instance, totesys_url, first.cursor)
    (request,) = payment.run_requests
    result = launch(request)
    assert "warehouse/fact_payment" in _materialised(result) and "warehouse/fact_sales_order" not in _materialised(result)
    assert _evaluated_checks(result) == {("fact_payment", "references_resolve")} | captures("payment")

    # A dimension only: it loads, and no check runs but the extraction's own.
    _insert_currency(totesys_url)
    (request,) = _next_request(instance, totesys_url, payment.cursor).run_requests
    result = launch(request)
    assert "warehouse/dim_currency" in _materialised(result)
    assert _evaluated_checks(result) == captures("currency")

    # The 20-minute schedule runs the whole job: every fact's references and the extraction's own, nothing else.
    assert _evaluated_checks(job.execute_in_process(instance=instance)) == every_fact | captures(*TABLE_NAMES)


def test_the_first_load_is_followed_by_one_validation_run_and_one_report():
    """A new instance gets the report and the hourly checks right after its first load, once."""
    from totesys_platform.defs.automation.jobs import REPORT_KEY, first_validation
    from totesys_platform.definitions import defs

    sensor = defs.get_sensor_def("first_validation_after_the_first_load")
    assert {job.name for job in sensor.jobs} == {"validate", "refresh_sales_report"}
    instance = dg.DagsterInstance.ephemeral()
    requests = first_validation(instance)
    assert {r.job_name for r in requests} == {"validate", "refresh_sales_report"}
    assert all(r.run_key for r in requests)  # run keys: the daemon launches each once
    instance.report_runless_asset_event(dg.AssetMaterialization(REPORT_KEY))
    assert isinstance(first_validation(instance), dg.SkipReason)


def test_definitions_load_with_the_graph_source_to_warehouse():
    from totesys_platform.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    for table in ("sales_order", "payment", "address"):
        assert f"totesys/{table}" in keys and f"lake/ingestion/{table}" in keys
    for table in ("fact_sales_order", "dim_counterparty", "dim_date"):
        assert f"lake/processed/{table}" in keys and f"warehouse/{table}" in keys
    assert len([k for k in keys if k.startswith("warehouse/")]) == len(TARGET_TABLES)
    assert len([k for k in keys if k.startswith("lake/processed/")]) == len(TARGET_TABLES)
    assert len([k for k in keys if k.startswith("lake/ingestion/")]) == len(TABLE_NAMES)
    # Lineage: facts load after the dimensions they refer to, dim_counterparty reads address too.
    parents = graph.get(dg.AssetKey(["warehouse", "fact_sales_order"])).parent_keys
    assert dg.AssetKey(["warehouse", "dim_date"]) in parents and dg.AssetKey(["warehouse", "dim_staff"]) in parents
    parents = graph.get(dg.AssetKey(["lake", "processed", "dim_counterparty"])).parent_keys
    assert parents == {dg.AssetKey(["lake", "ingestion", "counterparty"]), dg.AssetKey(["lake", "ingestion", "address"])}
    assert defs.resolve_job_def("totesys_etl") is not None
    assert defs.resolve_job_def("rebuild_warehouse") is not None


def test_the_tick_job_leaves_whole_history_checks_and_the_report_to_the_hourly_job():
    from totesys_platform.definitions import defs

    def nodes(job: str) -> set[str]:
        return {n.name for n in defs.resolve_job_def(job).graph.node_defs}

    etl = nodes("totesys_etl")
    assert "warehouse__fact_sales_order" in etl and "warehouse__fact_sales_order_references_resolve" in etl
    assert "analytics__sales_report" not in etl
    assert not any(n.endswith(("fact_history_matches_lake", "source_matches_lake")) for n in etl)
    hourly = nodes("validate")
    # The 11 source checks and the 7 row-count checks are one step each: a step costs Dagster's own time.
    assert {"warehouse__fact_payment_fact_history_matches_lake", "source_matches_lake",
            "row_count_matches_lake"} <= hourly
    assert "extract_totesys" not in hourly and "analytics__sales_report" not in hourly
    assert nodes("refresh_sales_report") == {"analytics__sales_report"}
    schedules = {s.name: s for s in defs.schedules}
    assert schedules["validate_hourly"].cron_schedule == "5 * * * *"
    assert schedules["refresh_sales_report_hourly"].job_name == "refresh_sales_report"
    # Hourly: what was added since the checks passed; daily, the same job over everything.
    assert "ops" not in (defs.resolve_job_def("validate").run_config or {})
    daily = schedules["validate_in_full_daily"]
    assert daily.job_name == "validate" and daily.cron_schedule == "50 3 * * *"
    (request,) = daily.evaluate_tick(dg.build_schedule_context()).run_requests
    assert request.tags[VALIDATION_TAG] == "full"


def test_observing_totesys_reports_each_tables_row_count_and_latest_change(totesys_url):
    from totesys_platform.defs.source.assets import observe_tables

    _insert_currency(totesys_url)
    observed = observe_tables(totesys_url)
    assert set(observed) == {"address", "counterparty", "currency", "department", "design", "payment",
                             "payment_type", "purchase_order", "sales_order", "staff", "transaction"}
    count, latest = observed["currency"]
    assert count == 1 and latest is not None
    assert observed["sales_order"] == (0, None)
