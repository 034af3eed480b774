"""The Dagster UI as users see it: the real webserver over one real pipeline run, read through its GraphQL API
and rendered by a real headless Chromium.

One stack serves the whole module: a seeded totesys and an empty warehouse on the session PostgreSQL (their URLs
carry a password, so the instance, the logs and the UI can be searched for it), a local-folder lake and a fresh
DAGSTER_HOME. The three scheduled jobs (`totesys_etl`, `validate`, `refresh_sales_report`) run once each through the
`dagster` CLI into that instance while `dagster-webserver` starts for the code location
`totesys_platform.definitions` on a free loopback port.
Screenshots and rendered DOMs land in test-artifacts/ui/ (gitignored); docs/ui.md shows the screenshots.
The browser tests are skipped when no Chromium binary is installed (.ci/run installs one).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
import numpy as np
import psycopg
import pytest
from psycopg import sql

from totesys_platform.local.postgres import free_port
from totesys_platform.settings import project_root
from totesys_platform.local import simulator
from totesys_platform.source.contract import TABLE_NAMES
from totesys_platform.star_schema import FACTS, TARGET_TABLES
from totesys_platform.warehouse.validation import DIMENSION_SOURCES

LOCATION = "totesys_platform.definitions"
REPOSITORY = "__repository__"
ETL_JOB = "totesys_etl"
VALIDATION_JOB = "validate"
REPORT_JOB = "refresh_sales_report"
# What the schedules run, in order: the pipeline with its blocking checks, then the other checks, then the report.
JOBS_RUN = (ETL_JOB, VALIDATION_JOB, REPORT_JOB)
VENV_BIN = Path(sys.executable).parent
ARTIFACTS = project_root() / "test-artifacts" / "ui"

ZONE_GROUPS = {
    ("totesys",): "totesys",
    ("lake", "ingestion"): "lake_ingestion",
    ("lake", "processed"): "lake_processed",
    ("warehouse",): "warehouse",
    ("analytics",): "analytics",
}

CHROMIUM = os.environ.get("CHROMIUM") or next(
    (path for path in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if path), None
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium binary on PATH (apt-get install chromium, as .ci/run does; or set CHROMIUM)"
)
# The flags verified in /work/shared/platform-notes.md ("A real browser"), plus hidden scrollbars for clean images.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
    "--window-size=1600,1000",
]
# Virtual time mostly stands still while requests are pending, but the UI also loads on timers: a page that
# is not ready after the first budget is rendered again with the next.
VIRTUAL_TIME_BUDGETS_MS = (8_000, 20_000, 40_000)
BROWSER_TIMEOUT_S = 90

# Each page the docs show: its file name under test-artifacts/ui/, its route, and a text that appears only once
# the page has its data (rendered before that, it would show spinners and dashes).
PAGES = {
    "lineage": ("/asset-groups", "Materialize all ("),
    "catalog": ("/assets", "Materialized"),
    "asset": ("/assets/warehouse/fact_sales_order", "Row count"),
    "asset_checks": ("/assets/warehouse/fact_sales_order?view=checks", "Succeeded"),
    "automation": ("/automation", "totesys_new_data_sensor"),
}


# --- processes -------------------------------------------------------------------------------------------------


def start_process(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start `cmd` in its own process group (so it and its children can be stopped together), output to `log`."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(c) for c in cmd], env=env, cwd=project_root(), stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )


def stop_process_group(proc: subprocess.Popen, grace_s: float = 20) -> None:
    """SIGTERM the group (the webserver shuts its code server down), SIGKILL whatever is left after the grace."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        proc.wait()
        return
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no output)"


# --- the webserver's GraphQL API ----------------------------------------------------------------------------------


def graphql(base_url: str, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{base_url}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.load(response)
    assert not body.get("errors"), f"GraphQL errors: {body['errors']}"
    return body["data"]


WORKSPACE_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def wait_for_webserver(base_url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 180) -> None:
    """Until /server_info answers and the code location is loaded; fails with the server's output otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            pytest.fail(f"dagster-webserver exited with code {proc.returncode} before serving:\n{tail(log)}")
        try:
            with urllib.request.urlopen(f"{base_url}/server_info", timeout=5) as response:
                assert "dagster_webserver_version" in json.load(response)
            entries = graphql(base_url, WORKSPACE_QUERY)["workspaceOrError"]["locationEntries"]
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                errors = [e for e in entries if e["locationOrLoadError"]["__typename"] == "PythonError"]
                assert not errors, f"the code location failed to load: {errors[0]['locationOrLoadError']['message']}"
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"dagster-webserver did not serve {LOCATION} within {timeout_s:.0f} s:\n{tail(log)}")
        time.sleep(0.25)


# --- the stack --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UiStack:
    base_url: str
    dagster_home: Path
    totesys_url: str
    warehouse_url: str
    secret: str
    logs: tuple[Path, ...]


def with_password(url: str, password: str) -> str:
    """The URL with a password added (the test cluster trusts loopback, so any password connects)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{password}@{parts.hostname}:{parts.port}"))


def instance_config() -> str:
    # Without these the UI opens a "Join the Dagster community" dialog over every page on localhost.
    return "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"


def stack_env(root: Path, totesys_url: str, warehouse_url: str) -> dict[str, str]:
    """This process's environment minus any platform settings, plus the test stack's."""
    ours = ("DAGSTER_", "TOTESYS_", "LAKE_", "WAREHOUSE_", "AWS_ENDPOINT_URL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    env.update(
        DAGSTER_HOME=str(root / "dagster_home"),
        TOTESYS_DB_URL=totesys_url,
        WAREHOUSE_DB_URL=warehouse_url,
        LAKE_INGESTION_URL=(root / "lake" / "ingestion").as_uri(),
        LAKE_PROCESSED_URL=(root / "lake" / "processed").as_uri(),
        TOTESYS_LOCAL_DIR=str(root / "local"),
    )
    return env


@pytest.fixture(scope="module")
def ui(pg_server, tmp_path_factory) -> UiStack:
    root = tmp_path_factory.mktemp("ui")
    secret = f"ui-secret-{uuid.uuid4().hex[:12]}"
    suffix = uuid.uuid4().hex[:6]
    databases = [f"ui_totesys_{suffix}", f"ui_warehouse_{suffix}"]
    for name in databases:
        pg_server.create_database(name)
    webserver = None
    try:
        totesys_url, warehouse_url = (with_password(pg_server.url(name), secret) for name in databases)
        simulator.seed(totesys_url, scale=0.02, seed=7, end=date(2023, 6, 30), progress=lambda *a, **k: None)
        env = stack_env(root, totesys_url, warehouse_url)
        home = Path(env["DAGSTER_HOME"])
        home.mkdir()
        (home / "dagster.yaml").write_text(instance_config())
        # Create the instance's SQLite storages now: a run and the webserver creating them at the same time
        # collide in their schema migrations.
        with dg.DagsterInstance.from_config(str(home)) as instance:
            instance.get_runs(limit=1)

        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        web_log = root / "webserver.log"
        run_logs = tuple(root / f"run-{job}.log" for job in JOBS_RUN)
        # The webserver starts while the jobs run: each spends much of its time importing the code location.
        webserver = start_process(
            [VENV_BIN / "dagster-webserver", "-m", LOCATION, "-h", "127.0.0.1", "-p", str(port)], env, web_log
        )
        for job, log in zip(JOBS_RUN, run_logs):
            run = start_process([VENV_BIN / "dagster", "job", "execute", "-m", LOCATION, "-j", job], env, log)
            try:
                exit_code = run.wait(timeout=240)
            except subprocess.TimeoutExpired:
                stop_process_group(run)
                pytest.fail(f"`dagster job execute -j {job}` did not finish within 240 s:\n{tail(log)}")
            assert exit_code == 0, f"`dagster job execute -j {job}` failed ({exit_code}):\n{tail(log)}"
        wait_for_webserver(base_url, webserver, web_log)
        yield UiStack(base_url, home, totesys_url, warehouse_url, secret, (web_log, *run_logs))
    finally:
        if webserver is not None:
            stop_process_group(webserver)
        for name in databases:
            pg_server.drop_database(name)

ASSET_NODES_QUERY = """{ assetNodes {
  assetKey { path } groupName kinds description isObservable isMaterializable
  assetChecksOrError { __typename ... on AssetChecks { checks { name blocking
    executionForLatestMaterialization { status runId evaluation { success } } } } }
  assetMaterializations(limit: 1) { runId metadataEntries { label ... on IntMetadataEntry { intValue } } }
} }"""


@pytest.fixture(scope="module")
def asset_nodes(ui) -> dict[tuple[str, ...], dict]:
    nodes = graphql(ui.base_url, ASSET_NODES_QUERY)["assetNodes"]
    return {tuple(node["assetKey"]["path"]): node for node in nodes}


def expected_asset_keys() -> set[tuple[str, ...]]:
    return (
        {("totesys", t) for t in TABLE_NAMES}
        | {("lake", "ingestion", t) for t in TABLE_NAMES}
        | {("lake", "processed", t) for t in TARGET_TABLES}
        | {("warehouse", t) for t in TARGET_TABLES}
        | {("analytics", "sales_report")}
    )


def zone_group(key: tuple[str, ...]) -> str:
    return next(group for prefix, group in ZONE_GROUPS.items() if key[: len(prefix)] == prefix)


def check_names(node: dict) -> dict[str, dict]:
    return {c["name"]: c for c in node["assetChecksOrError"].get("checks", [])}


def latest_int_metadata(node: dict, label: str) -> int | None:
    (materialization,) = node["assetMaterializations"]
    return next((e.get("intValue") for e in materialization["metadataEntries"] if e["label"] == label), None)


def count_rows(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0]


def runs_of(ui: UiStack, job: str) -> list[dict]:
    query = """query($job: String!) { runsOrError(filter: {pipelineName: $job}) {
      __typename ... on Runs { results { runId status } } } }"""
    return graphql(ui.base_url, query, {"job": job})["runsOrError"]["results"]


# --- what GraphQL serves ----------------------------------------------------------------------------------------


def test_the_ui_serves_every_asset_of_the_four_zones_and_the_report_in_its_zone_group(asset_nodes):
    missing = expected_asset_keys() - set(asset_nodes)
    assert not missing, f"assets missing from the UI: {sorted('/'.join(k) for k in missing)}"
    for key in expected_asset_keys():
        node = asset_nodes[key]
        where = "/".join(key)
        assert node["groupName"] == zone_group(key), f"{where} is in group {node['groupName']!r}"
        assert node["description"], f"{where} has no description in the UI"
        assert node["kinds"], f"{where} shows no kind (storage/compute badge) in the UI"
        if key[0] == "totesys":
            assert node["isObservable"] and not node["isMaterializable"], f"{where} should be an observable source"
        else:
            assert node["isMaterializable"], f"{where} cannot be materialised from the UI"


def test_the_asset_checks_sit_on_their_assets_and_show_passed_after_the_runs(asset_nodes):
    for fact in FACTS:
        checks = check_names(asset_nodes[("warehouse", fact)])
        assert {"references_resolve", "fact_history_matches_lake"} <= set(checks), (fact, sorted(checks))
        assert checks["references_resolve"]["blocking"], f"references_resolve on {fact} should block downstream"
    for dimension in DIMENSION_SOURCES:
        assert "row_count_matches_lake" in check_names(asset_nodes[("warehouse", dimension)]), dimension
    for key in [("lake", "ingestion", t) for t in TABLE_NAMES] + [("warehouse", t) for t in TARGET_TABLES]:
        assert "column_schema_change" in check_names(asset_nodes[key]), "/".join(key)

    shown = {
        ("/".join(key), name): check["executionForLatestMaterialization"]
        for key, node in asset_nodes.items() for name, check in check_names(node).items()
    }
    assert len(shown) >= len(FACTS) * 3 + len(DIMENSION_SOURCES) * 2 + len(TABLE_NAMES)
    not_passed = {
        where: execution for where, execution in shown.items()
        if not execution or execution["status"] != "SUCCEEDED" or not (execution["evaluation"] or {}).get("success")
    }
    assert not not_passed, f"checks not shown as passed after the runs: {not_passed}"


def test_the_schedules_the_sensors_and_the_jobs_are_deployed_and_running(ui):
    from totesys_platform.definitions import defs

    query = """{ repositoriesOrError { __typename ... on RepositoryConnection { nodes { name location { name }
      jobs { name } schedules { name cronSchedule pipelineName scheduleState { status } }
      sensors { name sensorState { status } targets { pipelineName } } } } } }"""
    (repository,) = graphql(ui.base_url, query)["repositoriesOrError"]["nodes"]
    assert repository["location"]["name"] == LOCATION
    assert {*JOBS_RUN, "rebuild_warehouse"} <= {job["name"] for job in repository["jobs"]}

    # Every schedule and sensor of the code location (the alert sensor and any later one included) ...
    schedules = {s["name"]: s for s in repository["schedules"]}
    sensors = {s["name"]: s for s in repository["sensors"]}
    assert set(schedules) == {s.name for s in defs.schedules}
    assert set(sensors) == {s.name for s in defs.sensors}
    # ... and the two that keep the warehouse fresh, on by default.
    schedule = schedules["totesys_etl_every_20_minutes"]
    assert (schedule["cronSchedule"], schedule["pipelineName"]) == ("*/20 * * * *", ETL_JOB)
    assert schedule["scheduleState"]["status"] == "RUNNING"
    new_data = sensors["totesys_new_data_sensor"]
    assert [t["pipelineName"] for t in new_data["targets"]] == [ETL_JOB]
    assert new_data["sensorState"]["status"] == "RUNNING"
    assert {s["pipelineName"] for s in schedules.values()} >= set(JOBS_RUN), "each job the test runs is scheduled"


def test_the_runs_succeeded_and_each_table_shows_its_true_row_count(ui, asset_nodes):
    for job in JOBS_RUN:
        assert [r["status"] for r in runs_of(ui, job)] == ["SUCCESS"], f"{job} runs: {runs_of(ui, job)}"
    run_id = runs_of(ui, ETL_JOB)[0]["runId"]
    for table in TARGET_TABLES:
        node = asset_nodes[("warehouse", table)]
        assert [m["runId"] for m in node["assetMaterializations"]] == [run_id], f"warehouse/{table} not materialised"
        rows = count_rows(ui.warehouse_url, table)
        assert rows > 0, table
        assert latest_int_metadata(node, "dagster/row_count") == rows, f"warehouse/{table}: row count in the UI"
    report = asset_nodes[("analytics", "sales_report")]
    assert [m["runId"] for m in report["assetMaterializations"]] == [runs_of(ui, REPORT_JOB)[0]["runId"]]
    for table in TABLE_NAMES:
        node = asset_nodes[("lake", "ingestion", table)]
        assert latest_int_metadata(node, "rows_archived") == count_rows(ui.totesys_url, table), f"ingestion/{table}"


def test_no_password_reaches_the_instance_the_logs_or_the_resources_page(ui):
    query = """query($repo: RepositorySelector!) { allTopLevelResourceDetailsOrError(repositorySelector: $repo) {
      __typename ... on ResourceDetailsList { results { name configuredValues { key value type } } } } }"""
    selector = {"repositoryName": REPOSITORY, "repositoryLocationName": LOCATION}
    resources = graphql(ui.base_url, query, {"repo": selector})["allTopLevelResourceDetailsOrError"]["results"]
    assert ui.secret not in json.dumps(resources)
    configured = {(r["name"], v["key"]): (v["type"], v["value"]) for r in resources for v in r["configuredValues"]}
    # The URLs are shown as the names of the variables holding them, never as values.
    assert configured[("totesys", "db_url")] == ("ENV_VAR", "TOTESYS_DB_URL")
    assert configured[("warehouse", "db_url")] == ("ENV_VAR", "WAREHOUSE_DB_URL")

    leaks = [str(p) for p in ui.dagster_home.rglob("*") if p.is_file() and ui.secret.encode() in p.read_bytes()]
    leaks += [str(log) for log in ui.logs if ui.secret in log.read_text(errors="replace")]
    assert not leaks, f"the database password appears in: {leaks}"
    assert any(ui.dagster_home.rglob("*.db")), "the run left no event storage to search"


# --- what a browser renders -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedPage:
    png: Path
    dom: str

    @property
    def text(self) -> str:
        """The visible text of the rendered DOM, whitespace collapsed."""
        body = re.sub(r"<(script|style)\b.*?</\1>", " ", self.dom, flags=re.S | re.I)
        return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body))).strip()


def render(url: str, png: Path, profile: Path, ready_text: str | None = None) -> RenderedPage:
    """Screenshot and rendered DOM of `url` in a headless Chromium, once the page shows `ready_text`."""
    problems = []
    for budget in VIRTUAL_TIME_BUDGETS_MS:
        png.unlink(missing_ok=True)
        cmd = [
            CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget}", f"--screenshot={png}", "--dump-dom", url,
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            dom, errors = proc.communicate(timeout=BROWSER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            # Seen on a loaded machine, with short budgets: a virtual-time run that never ends.
            stop_process_group(proc, grace_s=5)
            proc.communicate()
            problems.append(f"{budget} ms: no result within {BROWSER_TIMEOUT_S} s")
            continue
        if proc.returncode != 0 or not png.exists():
            problems.append(f"{budget} ms: exit code {proc.returncode}, no screenshot: {errors[-1500:]}")
            continue
        page = RenderedPage(png, dom)
        if ready_text is None or ready_text in page.text:
            return page
        problems.append(f"{budget} ms: the page does not show {ready_text!r} yet")
    pytest.fail(f"Chromium could not render {url}:\n" + "\n".join(problems))


@pytest.fixture(scope="module")
def pages(ui, tmp_path_factory) -> dict[str, RenderedPage]:
    """Every page of PAGES plus a blank page to compare with, rendered one after the other.

    One fresh profile for the module: each page is a new browser, but the UI's bundle comes from its cache.
    (Parallel browsers were measured slower and hung on a loaded 2-core machine.)
    """
    if CHROMIUM is None:
        pytest.skip("no Chromium binary")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    profile = tmp_path_factory.mktemp("chromium-profile")
    rendered = {"blank": render("about:blank", ARTIFACTS / "blank.png", profile)}
    for name, (route, ready_text) in PAGES.items():
        rendered[name] = render(f"{ui.base_url}{route}", ARTIFACTS / f"{name}.png", profile, ready_text)
        (ARTIFACTS / f"{name}.html").write_text(rendered[name].dom)
    return rendered


def screenshot_pixels(png: Path) -> np.ndarray:
    """The screenshot as an array of 0xRRGGBB integers, one per pixel (height x width)."""
    import matplotlib.image as mpimg

    rgb = np.round(mpimg.imread(png)[..., :3] * 255).astype(np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def assert_drawn(page: RenderedPage, blank: RenderedPage) -> None:
    """The screenshot is a drawn page: many colours (anti-aliased text, icons) right of the navigation and below
    the header, and clearly different from a blank page rendered the same way."""
    pixels, empty = screenshot_pixels(page.png), screenshot_pixels(blank.png)
    assert pixels.shape == empty.shape == (1000, 1600), (page.png, pixels.shape)
    assert len(np.unique(empty)) <= 2, "the blank reference page is not blank"
    colours = len(np.unique(pixels[120:, 260:]))
    assert colours > 100, f"{page.png.name}: only {colours} colours in the content area (blank or spinner?)"
    changed = (pixels != empty).mean()
    assert changed > 0.02, f"{page.png.name}: {changed:.1%} of the pixels differ from a blank page"


@needs_chromium
def test_the_lineage_page_draws_the_graph_of_the_five_zone_groups(pages, asset_nodes):
    page = pages["lineage"]
    assert_drawn(page, pages["blank"])
    assert "Global asset lineage" in page.text
    graph = re.search(r'<svg class="AssetGraphExplorer_svgContainer[^"]*".*?</svg>', page.dom, flags=re.S)
    assert graph, "the lineage page has no graph drawing"
    for group in ZONE_GROUPS.values():
        assert f'data-tooltip="{group}"' in graph.group(0), f"group {group} is not drawn in the lineage graph"
    materialisable = sum(node["isMaterializable"] for node in asset_nodes.values())
    assert f"Materialize all ({materialisable})" in page.text


@needs_chromium
def test_the_catalog_lists_assets_as_materialized(pages):
    page = pages["catalog"]
    assert_drawn(page, pages["blank"])
    # The list is virtualised: only the first rows (alphabetical) are in the DOM.
    for row in ("analytics / sales_report", "lake / ingestion / address"):
        assert row in page.text, f"{row} not in the catalog"
    assert page.text.count("Materialized") >= 2


@needs_chromium
def test_the_asset_page_shows_the_row_count_the_lineage_and_the_automation(pages, ui):
    page = pages["asset"]
    assert_drawn(page, pages["blank"])
    text = page.text
    assert f"Row count {count_rows(ui.warehouse_url, 'fact_sales_order')}" in text
    assert "fact_sales_order_current" in text, "the description names the current-state view"
    assert "lake / processed / fact_sales_order" in text and "warehouse / dim_date" in text, "upstream assets"
    assert "analytics / sales_report" in text, "downstream asset"
    for automation in (ETL_JOB, "totesys_new_data_sensor", "Every 20 minutes"):
        assert automation in text, f"{automation} not in the asset's automation details"


@needs_chromium
def test_the_checks_tab_shows_each_check_of_the_fact_as_succeeded(pages):
    page = pages["asset_checks"]
    assert_drawn(page, pages["blank"])
    for check in ("references_resolve", "fact_history_matches_lake", "column_schema_change"):
        assert f"{check} {check} Succeeded" in page.text, f"{check} not shown as succeeded"


@needs_chromium
def test_the_automation_page_lists_every_schedule_and_sensor(pages):
    from totesys_platform.definitions import defs

    page = pages["automation"]
    assert_drawn(page, pages["blank"])
    assert "totesys_etl_every_20_minutes Scheduled Every 20 minutes" in page.text
    for automation in [*defs.schedules, *defs.sensors]:
        assert automation.name in page.text, f"{automation.name} not on the automation page"
