"""The production deployment files, checked offline: no image is built and no AWS account is called.

Real parts where they exist here: Dagster's own config schemas and a real production instance (embedded
PostgreSQL, step logs on moto's S3), the deploy/sql scripts on the real PostgreSQL with the warehouse
migrations running as the loader role, the pipeline IAM policy enforced by a moto server, the Docker SDK's
.dockerignore matcher, and `terraform fmt` when the binary is installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg import sql

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
TERRAFORM = DEPLOY / "terraform"
IAM_DIR = DEPLOY / "iam"
SQL_DIR = DEPLOY / "sql"
DOCS = REPO / "docs" / "deployment.md"
VENV_BIN = Path(sys.executable).parent

# The variables the platform reads (issue 9), each of which deploy/.env.example must list.
PLATFORM_VARIABLES = (
    "TOTESYS_DB_URL", "WAREHOUSE_DB_URL", "LAKE_INGESTION_URL", "LAKE_PROCESSED_URL", "AWS_ENDPOINT_URL",
    "DAGSTER_HOME", "DAGSTER_PG_URL", "TOTESYS_AUTOMATION", "ALERT_EMAIL_TO", "ALERT_EMAIL_FROM", "SMTP_HOST",
    "SMTP_PORT", "SMTP_USERNAME", "SMTP_PASSWORD", "SMTP_STARTTLS", "ALERT_SNS_TOPIC_ARN", "DAGSTER_UI_URL",
    "CLOUDWATCH_LOG_GROUP", "CLOUDWATCH_LOG_STREAM", "AWS_REGION",
)
# Read by the package but meaningful only for the local development stack and the simulator
# (AWS_DEFAULT_REGION: compose derives it from AWS_REGION).
LOCAL_ONLY_VARIABLES = {"TOTESYS_LOCAL_DIR", "TOTESYS_LOCAL_PG_PORT", "AWS_DEFAULT_REGION", "SRR"}
GRPC_COMMAND = ["dagster", "api", "grpc", "-m", "totesys_platform.definitions", "-h", "0.0.0.0", "-p", "4000"]
LAKE_BUCKETS = ("ingestion", "processed")


# ---------------------------------------------------------------------------------------------------------
# helpers


def load_yaml(path: Path):
    with path.open() as f:
        return yaml.safe_load(f)


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as docker compose reads them (comments and blank lines skipped, no interpolation)."""
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), f"{path.name} line {number} is not KEY=VALUE: {line!r}"
        assert key not in values, f"{path.name} sets {key} twice"
        values[key] = value
    return values


def example_env() -> dict[str, str]:
    return read_env_file(DEPLOY / ".env.example")


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        pending += (" " if pending else "") + line.rstrip("\\").strip()
        if not line.endswith("\\"):
            keyword, _, args = pending.partition(" ")
            instructions.append((keyword.upper(), args.strip()))
            pending = ""
    return instructions


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def fenced_blocks(markdown: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", markdown, flags=re.S | re.M)


# ---------------------------------------------------------------------------------------------------------
# YAML files


@pytest.mark.parametrize("path", sorted(DEPLOY.glob("*.yaml")), ids=lambda p: p.name)
def test_every_deploy_yaml_file_parses_to_a_mapping(path):
    assert isinstance(load_yaml(path), dict), f"{path} is not a YAML mapping"


def test_the_deploy_folder_has_the_three_yaml_files():
    assert {p.name for p in DEPLOY.glob("*.yaml")} >= {"compose.yaml", "dagster.prod.yaml", "workspace.prod.yaml"}


# ---------------------------------------------------------------------------------------------------------
# deploy/dagster.prod.yaml against Dagster's own schemas

DUMMY_INSTANCE_ENV = {
    "DAGSTER_PG_URL": "postgresql+psycopg2://dagster:dummy@127.0.0.1:1/dagster",
    "DAGSTER_COMPUTE_LOG_BUCKET": "dummy-bucket",
    "DAGSTER_COMPUTE_LOG_PREFIX": "dagster/compute-logs",
}


def validated_instance_components(config_text: str, home: Path) -> dict[str, tuple[type, dict]]:
    """Validate an instance dagster.yaml the way `DagsterInstance.from_config` does, but without opening
    storage: the top-level schema, then every configurable class (imported) against its own config schema,
    environment variables resolved. Returns {component: (class, processed config)}."""
    from dagster._config import process_config, resolve_to_config_type
    from dagster._core.errors import DagsterInvalidConfigError
    from dagster._core.instance.config import dagster_instance_config
    from dagster._core.instance.ref import InstanceRef

    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(config_text)
    dagster_instance_config(str(home))
    ref = InstanceRef.from_dir(str(home))
    components = {
        "storage": ref.storage_data, "compute_logs": ref.compute_logs_data, "run_coordinator": ref.run_coordinator_data,
        "run_launcher": ref.run_launcher_data, "scheduler": ref.scheduler_data,
    }
    checked = {}
    for component, data in components.items():
        module = __import__(data.module_name, fromlist=[data.class_name])
        cls = getattr(module, data.class_name)
        result = process_config(resolve_to_config_type(cls.config_type()), yaml.safe_load(data.config_yaml) or {})
        if not result.success:
            raise DagsterInvalidConfigError(f"{component} ({data.class_name}) config is invalid", result.errors,
                                            data.config_yaml)
        checked[component] = (cls, result.value)
    return checked


@pytest.fixture
def instance_env(monkeypatch):
    for name, value in DUMMY_INSTANCE_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-2")


def test_prod_instance_config_passes_dagsters_schemas(instance_env, tmp_path):
    checked = validated_instance_components((DEPLOY / "dagster.prod.yaml").read_text(), tmp_path / "home")

    storage_cls, storage = checked["storage"]
    assert storage_cls.__name__ == "DagsterPostgresStorage"
    assert storage["postgres_url"] == DUMMY_INSTANCE_ENV["DAGSTER_PG_URL"]  # read from the environment

    logs_cls, logs = checked["compute_logs"]
    assert logs_cls.__name__ == "S3ComputeLogManager"
    assert (logs["bucket"], logs["prefix"]) == ("dummy-bucket", "dagster/compute-logs")
    assert "endpoint_url" not in logs  # boto3 reads AWS_ENDPOINT_URL itself; a fixed value would pin it

    coordinator_cls, coordinator = checked["run_coordinator"]
    assert coordinator_cls.__name__ == "QueuedRunCoordinator"
    assert coordinator["max_concurrent_runs"] == 1
    assert coordinator["tag_concurrency_limits"], "a tag concurrency limit is required"
    assert all(limit["limit"] == 1 for limit in coordinator["tag_concurrency_limits"])


def test_prod_instance_config_keeps_retries_bounded_and_telemetry_off():
    config = load_yaml(DEPLOY / "dagster.prod.yaml")
    retries = config.get("run_retries", {})
    assert not retries.get("enabled") or 0 < retries["max_retries"] <= 1
    assert retries.get("retry_on_asset_or_op_failure") is False  # failed assets alert a person instead
    assert config["telemetry"] == {"enabled": False}
    assert config["nux"] == {"enabled": False}
    assert config["run_monitoring"]["enabled"] is True  # needed for crash retries to happen at all
    assert "run_queue" not in config  # would conflict with run_coordinator


def test_prod_instance_config_holds_no_literal_secret_or_host():
    text = (DEPLOY / "dagster.prod.yaml").read_text()
    assert "postgresql" not in re.sub(r"#.*", "", text), "the storage URL must come from DAGSTER_PG_URL"
    assert not re.search(r"(?i)password\s*:", text)


def test_the_tag_limits_name_tags_that_runs_really_carry():
    limits = load_yaml(DEPLOY / "dagster.prod.yaml")["run_coordinator"]["config"]["tag_concurrency_limits"]
    sources = "\n".join(p.read_text() for p in (REPO / "totesys_platform").rglob("*.py"))
    for limit in limits:
        key = limit["key"]
        if key.startswith("dagster/"):
            continue  # set by Dagster itself (backfills)
        assert f'"{key}"' in sources, f"no code sets the run tag {key!r} that dagster.prod.yaml limits"


def test_the_validator_rejects_a_misspelt_setting(instance_env, tmp_path):
    from dagster._core.errors import DagsterInvalidConfigError

    broken = (DEPLOY / "dagster.prod.yaml").read_text().replace("max_concurrent_runs:", "max_concurent_runs:")
    with pytest.raises(DagsterInvalidConfigError, match="max_concurent_runs"):
        validated_instance_components(broken, tmp_path / "home")


def test_the_validator_names_a_missing_environment_variable(instance_env, tmp_path, monkeypatch):
    from dagster._core.errors import DagsterInvalidConfigError

    monkeypatch.delenv("DAGSTER_PG_URL")
    with pytest.raises(DagsterInvalidConfigError, match="DAGSTER_PG_URL"):
        validated_instance_components((DEPLOY / "dagster.prod.yaml").read_text(), tmp_path / "home")


def test_the_prod_instance_opens_on_real_postgres_with_step_logs_in_s3(
        pg_server, empty_db_url, moto_endpoint, s3_bucket, tmp_path, monkeypatch):
    import boto3
    from dagster import DagsterInstance, DagsterRun, DagsterRunStatus
    from dagster._core.run_coordinator.queued_run_coordinator import QueuedRunCoordinator
    from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
    from dagster_postgres import PostgresRunStorage

    dagster_db = empty_db_url("dagster")
    monkeypatch.setenv("DAGSTER_PG_URL", dagster_db.replace("postgresql://", "postgresql+psycopg2://", 1))
    monkeypatch.setenv("DAGSTER_COMPUTE_LOG_BUCKET", s3_bucket)
    monkeypatch.setenv("DAGSTER_COMPUTE_LOG_PREFIX", "dagster/compute-logs")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)  # as deploy/.env would set it for MinIO/LocalStack
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-2")
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY / "dagster.prod.yaml", home / "dagster.yaml")

    instance = DagsterInstance.from_config(str(home))
    try:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert isinstance(instance.compute_log_manager, S3ComputeLogManager)

        run_id = uuid.uuid4().hex
        instance.add_run(DagsterRun(job_name="totesys_etl", run_id=run_id, status=DagsterRunStatus.NOT_STARTED))
        assert instance.get_run_by_id(run_id).status == DagsterRunStatus.NOT_STARTED
        with psycopg.connect(dagster_db) as conn:  # really in PostgreSQL, not in a local file
            assert conn.execute("SELECT count(*) FROM runs WHERE run_id = %s", (run_id,)).fetchone()[0] == 1

        # open_log_stream is the same local-file-then-upload path a step's capture takes, without the `tail -F`
        # subprocess capture_logs mirrors stdout with (Dagster waits up to 30 s for it to exit: a CI flake).
        from dagster._core.storage.compute_log_manager import ComputeIOType

        with instance.compute_log_manager.open_log_stream(
                [run_id, "compute_logs", "extract"], ComputeIOType.STDOUT) as stream:
            stream.write("step output for the UI\n")
        keys = [o["Key"] for o in boto3.client("s3", endpoint_url=moto_endpoint, region_name="eu-west-2")
                .list_objects_v2(Bucket=s3_bucket).get("Contents", [])]
        key = f"dagster/compute-logs/storage/{run_id}/compute_logs/extract.out"
        assert key in keys
        body = boto3.client("s3", endpoint_url=moto_endpoint, region_name="eu-west-2").get_object(
            Bucket=s3_bucket, Key=key)["Body"].read()
        assert body == b"step output for the UI\n"
    finally:
        instance.dispose()


# ---------------------------------------------------------------------------------------------------------
# workspace and compose


def test_workspace_points_at_the_compose_code_server():
    (entry,) = load_yaml(DEPLOY / "workspace.prod.yaml")["load_from"]
    server = entry["grpc_server"]
    service = load_yaml(DEPLOY / "compose.yaml")["services"][server["host"]]
    command = service["command"]
    assert command == GRPC_COMMAND
    assert str(server["port"]) == command[command.index("-p") + 1]
    tool_dagster = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dagster"]
    assert server["location_name"] == tool_dagster["code_location_name"]
    assert command[command.index("-m") + 1] == tool_dagster["module_name"]


def compose_services() -> dict:
    return load_yaml(DEPLOY / "compose.yaml")["services"]


def test_compose_has_the_four_production_services_and_an_optional_warehouse():
    services = compose_services()
    always_on = {name for name, s in services.items() if not s.get("profiles")}
    assert always_on == {"dagster-postgres", "code-location", "webserver", "daemon"}
    assert services["warehouse"]["profiles"] == ["warehouse"]


@pytest.mark.parametrize("name", ["dagster-postgres", "code-location", "webserver", "daemon", "warehouse"])
def test_every_compose_service_restarts_and_has_a_healthcheck(name):
    service = compose_services()[name]
    assert service["restart"] in ("unless-stopped", "always")
    check = service["healthcheck"]
    assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1
    assert {"interval", "timeout", "retries", "start_period"} <= set(check)


def test_compose_starts_services_only_after_what_they_need_is_healthy():
    services = compose_services()
    for name in ("code-location", "webserver", "daemon"):
        depends = services[name]["depends_on"]
        assert depends["dagster-postgres"] == {"condition": "service_healthy"}
    for name in ("webserver", "daemon"):
        assert services[name]["depends_on"]["code-location"] == {"condition": "service_healthy"}


def test_the_dagster_services_run_the_production_commands_from_one_image():
    services = compose_services()
    assert services["code-location"]["command"] == GRPC_COMMAND
    workspace_in_image = "/opt/dagster/app/workspace.yaml"
    assert services["webserver"]["command"][0] == "dagster-webserver"
    assert services["webserver"]["command"][-2:] == ["-w", workspace_in_image]
    assert services["daemon"]["command"] == ["dagster-daemon", "run", "-w", workspace_in_image]
    images = {services[n]["image"] for n in ("code-location", "webserver", "daemon")}
    assert len(images) == 1
    for name in ("code-location", "webserver", "daemon"):
        assert services[name]["build"] == {"context": "..", "dockerfile": "Dockerfile"}
    assert (DEPLOY / services["code-location"]["build"]["context"] / "Dockerfile").resolve() == REPO / "Dockerfile"
    copies = [args for keyword, args in dockerfile_instructions((REPO / "Dockerfile").read_text()) if keyword == "COPY"]
    assert f"deploy/workspace.prod.yaml {workspace_in_image}" in copies


def click_command(invocation: list[str]):
    """The click command a command line runs: its console script, then as many subcommands as it names."""
    from importlib.metadata import entry_points

    scripts = [e for e in entry_points(group="console_scripts") if e.name == invocation[0]]
    assert scripts, f"{invocation[0]} is not a console script of the installed packages"
    command = sys.modules[scripts[0].load().__module__].cli
    for word in invocation[1:]:
        if not hasattr(command, "commands") or word not in command.commands:
            break
        command = command.commands[word]
    return command


def test_compose_commands_exist_in_the_installed_dagster():
    """Every command (and option) compose runs is a real CLI of the pinned Dagster."""
    services = compose_services()
    invocations = [
        services["code-location"]["command"],
        services["code-location"]["healthcheck"]["test"][1:],
        services["webserver"]["command"],
        services["daemon"]["command"],
        services["daemon"]["healthcheck"]["test"][1:],
    ]
    for invocation in invocations:
        command = click_command(invocation)
        assert not hasattr(command, "commands"), f"{' '.join(invocation)} names a command group, not a command"
        options = {o for param in command.params for o in (*param.opts, *param.secondary_opts)}
        used = {w for w in invocation if w.startswith("-")}
        assert used <= options, f"{' '.join(invocation)}: {sorted(used - options)} are not options of this command"


def test_only_the_webserver_publishes_a_port_and_only_on_loopback():
    services = compose_services()
    for name, service in services.items():
        for mapping in service.get("ports", []):
            assert str(mapping).startswith("127.0.0.1:"), f"{name} publishes {mapping} beyond the host's loopback"
    assert [n for n, s in services.items() if s.get("ports") and not s.get("profiles")] == ["webserver"]


def test_compose_gives_the_whole_env_file_to_the_code_location_only():
    services = compose_services()
    assert services["code-location"]["env_file"] == ".env"
    for name in ("webserver", "daemon", "dagster-postgres"):
        assert "env_file" not in services[name]
        passed = set(services[name].get("environment", {}))
        assert not passed & {"TOTESYS_DB_URL", "WAREHOUSE_DB_URL", "SMTP_PASSWORD"}, f"{name} gets pipeline secrets"


def test_compose_sets_no_literal_secret():
    for name, service in compose_services().items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|TOKEN|_URL$|KEY", key):
                assert re.fullmatch(r"\$\{[A-Z_]+(:?[-?][^}]*)?\}", str(value)), (
                    f"{name}.{key} must be interpolated from deploy/.env, not written in compose.yaml")


def test_every_variable_compose_interpolates_is_in_the_env_example():
    text = (DEPLOY / "compose.yaml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", text))
    missing = used - set(example_env())
    assert not missing, f"deploy/compose.yaml uses {sorted(missing)}, which deploy/.env.example does not list"


def test_the_artifact_volume_is_mounted_where_the_image_keeps_dagster_home():
    mounts = compose_services()["code-location"]["volumes"]
    env = dict(a.split("=", 1) for k, a in dockerfile_instructions((REPO / "Dockerfile").read_text())
               for a in a.split() if k == "ENV" and "=" in a)
    assert f"dagster-artifacts:{env['DAGSTER_HOME']}/storage" in mounts


# ---------------------------------------------------------------------------------------------------------
# deploy/.env.example


def test_env_example_lists_every_platform_variable():
    missing = [name for name in PLATFORM_VARIABLES if name not in example_env()]
    assert not missing, f"deploy/.env.example does not list {missing}"


def test_env_example_lists_every_variable_the_package_reads():
    names = set()
    for path in (REPO / "totesys_platform").rglob("*.py"):
        text = path.read_text()
        names |= set(re.findall(r"""(?:environ\.get|getenv|env\.get|EnvVar)\(\s*["']([A-Z][A-Z0-9_]+)["']""", text))
        # Tables of (variable, default) pairs, e.g. alerts.py's "smtp_host": ("SMTP_HOST", "").
        names |= set(re.findall(r"""["']\w+["']\s*:\s*\(\s*["']([A-Z][A-Z0-9_]+)["']\s*,""", text))
    names -= LOCAL_ONLY_VARIABLES
    missing = sorted(names - set(example_env()))
    assert not missing, f"the package reads {missing}: document them in deploy/.env.example"


def test_env_example_holds_placeholders_not_secrets():
    env = example_env()
    for key, value in env.items():
        if re.search(r"PASSWORD|SECRET", key) and value:
            assert value.startswith("change-me"), f"{key} must be a change-me placeholder"
        if "://" in value:
            password = re.match(r"^[^:]+://[^:/@]+:([^@]*)@", value)
            assert password is None or password.group(1).startswith("change-me"), f"{key} holds a real-looking password"
    text = (DEPLOY / ".env.example").read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}", text), "an AWS access key id"
    assert env["AWS_ACCESS_KEY_ID"] == env["AWS_SECRET_ACCESS_KEY"] == ""


def test_env_example_dagster_url_matches_its_parts_and_scheme():
    env = example_env()
    url = env["DAGSTER_PG_URL"]
    assert url.startswith("postgresql+psycopg2://"), "dagster-postgres needs psycopg2 (see platform notes)"
    expected = (f"postgresql+psycopg2://{env['DAGSTER_PG_USER']}:{env['DAGSTER_PG_PASSWORD']}"
                f"@dagster-postgres:5432/{env['DAGSTER_PG_DB']}")
    assert url == expected
    assert "dagster-postgres" in compose_services()


def test_env_example_is_consistent_with_the_image_and_the_settings():
    from totesys_platform.settings import Settings

    env = example_env()
    image_env = dict(a.split("=", 1) for k, a in dockerfile_instructions((REPO / "Dockerfile").read_text())
                     for a in a.split() if k == "ENV" and "=" in a)
    assert env["DAGSTER_HOME"] == image_env["DAGSTER_HOME"]
    settings = Settings.from_env(env)
    assert settings.lake_ingestion_url.startswith("s3://") and settings.lake_processed_url.startswith("s3://")
    assert settings.aws_endpoint_url is None  # empty = AWS itself
    assert env["TOTESYS_AUTOMATION"] in ("on", "off")
    assert env["SMTP_STARTTLS"] in ("true", "false")
    assert re.fullmatch(r"arn:aws:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]+", env["ALERT_SNS_TOPIC_ARN"])
    assert env["DAGSTER_COMPUTE_LOG_BUCKET"] == settings.lake_processed_url.split("/")[2]


def test_the_filled_in_env_file_and_terraform_state_are_git_ignored():
    candidates = ["deploy/.env", "deploy/terraform/terraform.tfstate", "deploy/terraform/prod.tfvars",
                  "deploy/terraform/.terraform/providers/x"]
    result = subprocess.run(["git", "check-ignore", *candidates], cwd=REPO, capture_output=True, text=True)
    assert sorted(result.stdout.split()) == sorted(candidates)
    kept = subprocess.run(["git", "check-ignore", "deploy/.env.example", "deploy/terraform/terraform.tfvars.example"],
                          cwd=REPO, capture_output=True, text=True)
    assert kept.stdout == ""


# ---------------------------------------------------------------------------------------------------------
# Dockerfile and build context


def test_dockerfile_builds_on_python_311_slim_in_every_stage():
    froms = [args for keyword, args in dockerfile_instructions((REPO / "Dockerfile").read_text()) if keyword == "FROM"]
    assert froms and all(re.match(r"python:3\.11-slim(\s|$)", f) for f in froms), froms


def test_dockerfile_runs_as_a_non_root_user_it_creates():
    stage = final_stage(dockerfile_instructions((REPO / "Dockerfile").read_text()))
    users = [(i, args) for i, (keyword, args) in enumerate(stage) if keyword == "USER"]
    assert users, "the final stage must switch to an unprivileged USER"
    index, user = users[-1]
    name = user.split(":")[0]
    assert name not in ("root", "0"), "the image must not run as root"
    assert not [k for k, _ in stage[index:] if k == "RUN"], "no RUN after USER (it would need root)"
    created = " ".join(args for keyword, args in stage[:index] if keyword == "RUN")
    assert re.search(rf"useradd\b.*\b{re.escape(name)}\b", created), f"user {name} is not created in the image"
    uid = re.search(r"--uid (\d+)", created)
    assert uid and int(uid.group(1)) >= 1000


def test_dockerfile_installs_the_project_non_editable_with_locked_dependencies():
    instructions = dockerfile_instructions((REPO / "Dockerfile").read_text())
    runs = [args for keyword, args in instructions if keyword == "RUN"]
    installs = [r for r in runs if "pip install" in r]
    assert installs
    assert not any(re.search(r"\s(-e|--editable)\s", r) for r in installs)
    assert any(re.search(r"pip install --constraint deploy/constraints\.txt \.(\s|$)", r) for r in installs)
    copies = [args for keyword, args in instructions if keyword == "COPY"]
    assert "pyproject.toml README.md ./" in copies


def test_dockerfile_default_command_is_the_code_server():
    stage = final_stage(dockerfile_instructions((REPO / "Dockerfile").read_text()))
    (cmd,) = [json.loads(args) for keyword, args in stage if keyword == "CMD"]
    assert cmd == GRPC_COMMAND


def test_dockerfile_bakes_in_no_secret():
    text = (REPO / "Dockerfile").read_text()
    instructions = dockerfile_instructions(text)
    for keyword, args in instructions:
        if keyword in ("ENV", "ARG"):
            assert not re.search(r"(?i)(password|secret|token|access_key|_DB_URL|PG_URL)", args), f"{keyword} {args}"
        if keyword in ("COPY", "ADD"):
            assert ".env" not in args.split()[0] and "tfstate" not in args
    assert not re.search(r"://[^/\s:@]+:[^@\s]+@", text), "a URL with a password"
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)


def test_every_file_the_dockerfile_copies_is_in_the_build_context():
    from docker.utils.build import exclude_paths

    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    context = exclude_paths(str(REPO), patterns)
    for keyword, args in dockerfile_instructions((REPO / "Dockerfile").read_text()):
        if keyword != "COPY" or args.startswith("--from"):
            continue
        for source in args.split()[:-1]:
            if source.startswith("--"):
                continue
            source = source.rstrip("/")
            assert (REPO / source).exists(), f"COPY {source}: no such file in the repository"
            assert any(path == source or path.startswith(source + "/") for path in context), (
                f"COPY {source}: excluded from the build context by .dockerignore")


def test_the_build_context_keeps_out_local_state_and_secrets(tmp_path):
    from docker.utils.build import exclude_paths

    tree = ["pyproject.toml", "README.md", "totesys_platform/__init__.py", "totesys_platform/source/x.sql",
            "deploy/constraints.txt", "deploy/dagster.prod.yaml", "deploy/workspace.prod.yaml",
            ".env", "deploy/.env", ".venv/bin/python", ".git/config", ".local/pg/data",
            "deploy/terraform/terraform.tfstate",
            "deploy/terraform/.terraform/x", "totesys_platform_tests/test_x.py", "totesys_platform/__pycache__/a.pyc",
            "id_rsa", "credentials.json", ".hypothesis/x"]
    for name in tree:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    context = {p for p in exclude_paths(str(tmp_path), patterns) if (tmp_path / p).is_file()}
    assert context == {"pyproject.toml", "README.md", "totesys_platform/__init__.py", "totesys_platform/source/x.sql",
                       "deploy/constraints.txt", "deploy/dagster.prod.yaml", "deploy/workspace.prod.yaml"}


@pytest.fixture(scope="module")
def package_build(tmp_path_factory) -> tuple[Path, Path]:
    """What `pip install .` in the image puts into site-packages: setuptools' build_py, run on a copy of the
    sources (it writes egg-info next to pyproject.toml). Returns (sources, build output)."""
    work = tmp_path_factory.mktemp("package") / "src"
    build_dir = work.parent / "build"
    work.mkdir()
    shutil.copy(REPO / "pyproject.toml", work)
    shutil.copy(REPO / "README.md", work)
    shutil.copytree(REPO / "totesys_platform", work / "totesys_platform", ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run(
        [sys.executable, "-c", "from setuptools import setup; setup()", "-q",
         "build_py", "--build-lib", str(build_dir)],
        cwd=work, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return work, build_dir


def test_the_package_build_contains_every_module(package_build):
    work, build_dir = package_build
    sources = {p.relative_to(work).as_posix() for p in (work / "totesys_platform").rglob("*.py")}
    built = {p.relative_to(build_dir).as_posix() for p in build_dir.rglob("*.py")}
    assert sources - built == set()
    assert "totesys_platform/definitions.py" in built


def test_the_built_package_loads_its_code_location_with_an_empty_environment(package_build, tmp_path):
    """As the image's build step and `dagster api grpc` do: from the installed files, not the checkout,
    with no setting in the environment (settings are read when resources are used, not at import)."""
    _, build_dir = package_build
    probe = ("import totesys_platform, totesys_platform.definitions as d; "
             "print(totesys_platform.__file__); print(len(d.defs.resolve_asset_graph().get_all_asset_keys()))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=180,
                            env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": str(build_dir)})
    assert result.returncode == 0, result.stderr[-3000:]
    location, assets = result.stdout.split()[-2:]
    assert location.startswith(str(build_dir)), f"imported {location}, not the built package"
    assert int(assets) > 0


def test_the_package_build_contains_every_data_file(package_build):
    work, build_dir = package_build
    data = {p.relative_to(work).as_posix() for p in (work / "totesys_platform").rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc")}
    built = {p.relative_to(build_dir).as_posix() for p in build_dir.rglob("*") if p.is_file()}
    assert data - built == set(), f"left out of the installed package: {sorted(data - built)}"


# ---------------------------------------------------------------------------------------------------------
# deploy/constraints.txt


def load_lock_constraints():
    """deploy/lock_constraints.py as a module (deploy/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("lock_constraints", DEPLOY / "lock_constraints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_constraints_pin_exactly_the_runtime_dependencies_of_this_environment():
    lock_constraints = load_lock_constraints()
    on_disk = lock_constraints.parse((DEPLOY / "constraints.txt").read_text())
    assert on_disk == lock_constraints.runtime_closure(), (
        "deploy/constraints.txt is stale: run `.venv/bin/python deploy/lock_constraints.py`")
    assert "pytest" not in on_disk and "moto" not in on_disk  # test extras stay out of the image


def test_constraints_agree_with_the_pins_in_pyproject():
    lock_constraints = load_lock_constraints()
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = lock_constraints.parse((DEPLOY / "constraints.txt").read_text())
    for line in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is a dependency but not in deploy/constraints.txt"
        assert req.specifier.contains(pins[name]), (
            f"constraints pin {name}=={pins[name]}, pyproject says {req.specifier}")


def test_lock_constraints_names_a_missing_package():
    lock_constraints = load_lock_constraints()
    with pytest.raises(lock_constraints.LockError, match="no-such-package-xyz"):
        lock_constraints.runtime_closure("no-such-package-xyz")


# ---------------------------------------------------------------------------------------------------------
# Terraform

TF_FILES = sorted(TERRAFORM.glob("*.tf"))


def parse_tf(path: Path) -> dict:
    import hcl2
    from hcl2 import SerializationOptions

    options = SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)
    with path.open() as f:
        return hcl2.load(f, serialization_options=options)


@pytest.fixture(scope="module")
def terraform() -> dict[str, list]:
    """Every top-level block kind -> the list of its bodies, over all .tf files."""
    merged: dict[str, list] = {}
    for path in TF_FILES:
        for kind, bodies in parse_tf(path).items():
            merged.setdefault(kind, []).extend(bodies if isinstance(bodies, list) else [bodies])
    return merged


def declared(terraform, kind: str) -> dict[str, dict]:
    """{'type.name': body} for resource/data blocks, {'name': body} for variables and outputs."""
    out = {}
    for block in terraform.get(kind, []):
        for first, inner in block.items():
            if kind in ("resource", "data"):
                for name, body in inner.items():
                    out[f"{first}.{name}"] = body
            else:
                out[first] = inner
    return out


def interpolations(value) -> list[str]:
    """The contents of every ${...} in a parsed value (balanced braces, so nested objects stay whole)."""
    found = []
    if isinstance(value, dict):
        for v in value.values():
            found += interpolations(v)
    elif isinstance(value, list):
        for v in value:
            found += interpolations(v)
    elif isinstance(value, str):
        start = value.find("${")
        while start != -1:
            depth, i = 0, start + 1
            while i < len(value):
                depth += {"{": 1, "}": -1}.get(value[i], 0)
                if depth == 0:
                    break
                i += 1
            found.append(value[start + 2:i])
            start = value.find("${", i)
    return found


def policy_statements(terraform) -> dict[str, list[dict]]:
    """{policy document name: its statements, dynamic ones included}."""
    documents = {}
    for key, body in declared(terraform, "data").items():
        if not key.startswith("aws_iam_policy_document."):
            continue
        statements = list(body.get("statement", []))
        for dynamic in body.get("dynamic", []):
            statements += [c for block in dynamic.get("statement", []) for c in [block.get("content", {})]]
        documents[key.split(".", 1)[1]] = statements
    return documents


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


LAKE_OBJECTS_TF = {f'${{aws_s3_bucket.lake["{b}"].arn}}/*' for b in LAKE_BUCKETS}
# Actions AWS authorises only against Resource "*" (no resource-level permissions; see the Service
# Authorization Reference): the ECS roles of ecs_iam.tf may name "*" for these, and for nothing else.
# The webserver's read-only view of Dagster's step logs: a prefix inside the processed bucket's objects.
STEP_LOG_OBJECTS_TF = '${aws_s3_bucket.lake["processed"].arn}/${var.compute_logs_prefix}/*'
NO_RESOURCE_LEVEL_ACTIONS = {"ecr:GetAuthorizationToken", "ecs:DescribeTaskDefinition", "ec2:DescribeNetworkInterfaces"}


def test_every_tf_file_parses():
    assert {p.name for p in TF_FILES} >= {"versions.tf", "variables.tf", "iam.tf", "s3.tf", "outputs.tf"}
    for path in TF_FILES:
        assert isinstance(parse_tf(path), dict), path


def test_terraform_and_the_aws_provider_are_pinned(terraform):
    (settings,) = terraform["terraform"]
    assert settings["required_version"]
    aws = settings["required_providers"][0]["aws"] if isinstance(settings["required_providers"], list) \
        else settings["required_providers"]["aws"]
    assert aws["source"] == "hashicorp/aws"
    assert re.fullmatch(r"(~>|=)\s*\d+\.\d+(\.\d+)?", aws["version"].strip()), (
        f"pin the AWS provider to one major version (~> X.Y), not {aws['version']!r}")
    (provider,) = terraform["provider"]
    assert provider["aws"]["region"] == "${var.aws_region}"


def test_every_reference_in_the_terraform_is_declared(terraform):
    resources, data = declared(terraform, "resource"), declared(terraform, "data")
    variables, outputs = declared(terraform, "variable"), declared(terraform, "output")
    locals_ = {name for block in terraform.get("locals", []) for name in block}
    problems = []
    for expression in interpolations(terraform):
        for name in re.findall(r"\bvar\.(\w+)", expression):
            if name not in variables:
                problems.append(f"var.{name}")
        for name in re.findall(r"\blocal\.(\w+)", expression):
            if name not in locals_:
                problems.append(f"local.{name}")
        for kind, name in re.findall(r"\bdata\.(\w+)\.(\w+)", expression):
            if f"{kind}.{name}" not in data:
                problems.append(f"data.{kind}.{name}")
        for kind, name in re.findall(r"(?<![.\w])(aws_\w+)\.(\w+)", expression):
            if f"{kind}.{name}" not in resources:
                problems.append(f"{kind}.{name}")
    assert not problems, f"undeclared references: {sorted(set(problems))}"
    for name, body in variables.items():
        assert body.get("description") and body.get("type"), f"variable {name} needs a description and a type"
    assert outputs


def test_no_iam_allow_statement_has_a_wildcard_beyond_the_lake_objects(terraform):
    documents = policy_statements(terraform)
    assert {"pipeline", "pipeline_trust"} <= set(documents)
    for document, statements in documents.items():
        for statement in statements:
            assert "not_actions" not in statement and "not_resources" not in statement, document
            if statement.get("effect", "Allow") != "Allow":
                continue  # a Deny (e.g. TLS-only bucket policy) may use wildcards: it only takes rights away
            for action in as_list(statement.get("actions", [])):
                assert "*" not in action, f"{document}/{statement.get('sid')}: wildcard action {action!r}"
            for resource in as_list(statement.get("resources", [])):
                if resource in LAKE_OBJECTS_TF or resource == STEP_LOG_OBJECTS_TF:
                    continue
                if resource == "*" and set(as_list(statement["actions"])) <= NO_RESOURCE_LEVEL_ACTIONS:
                    continue
                assert "*" not in resource, f"{document}/{statement.get('sid')}: wildcard resource {resource!r}"
            for principal in statement.get("principals", []):
                assert "*" not in as_list(principal["identifiers"]), f"{document}: Allow to any principal"


def test_the_pipeline_policy_grants_exactly_its_five_needs(terraform):
    statements = {s["sid"]: s for s in policy_statements(terraform)["pipeline"]}
    assert set(statements) == {"ListLakeBuckets", "ReadWriteLakeObjects", "PublishAlerts", "ShipRunLogs",
                               "ReadOwnSecrets"}
    assert statements["ReadWriteLakeObjects"]["resources"] and set(
        statements["ReadWriteLakeObjects"]["resources"]) == LAKE_OBJECTS_TF
    assert statements["PublishAlerts"]["resources"] == ["${aws_sns_topic.alerts.arn}"]
    assert statements["ShipRunLogs"]["resources"] == ["${aws_cloudwatch_log_stream.pipeline.arn}"]
    granted = {a for s in statements.values() for a in s["actions"]}
    assert not granted & {"s3:DeleteObjectVersion", "s3:PutBucketPolicy", "s3:PutLifecycleConfiguration",
                          "secretsmanager:PutSecretValue", "logs:CreateLogGroup"}


def test_the_lake_buckets_are_versioned_encrypted_private_and_expire_old_versions(terraform):
    resources = declared(terraform, "resource")
    buckets = resources["aws_s3_bucket.lake"]
    assert set(re.findall(r"^\s*(\w+)\s*=", (TERRAFORM / "main.tf").read_text(), re.M)) >= set(LAKE_BUCKETS)
    assert buckets["for_each"] == "${local.bucket_names}"
    for kind in ("aws_s3_bucket_versioning", "aws_s3_bucket_server_side_encryption_configuration",
                 "aws_s3_bucket_public_access_block", "aws_s3_bucket_ownership_controls", "aws_s3_bucket_policy"):
        assert resources[f"{kind}.lake"]["for_each"] == "${aws_s3_bucket.lake}", f"{kind} must cover both buckets"
    assert resources["aws_s3_bucket_versioning.lake"]["versioning_configuration"][0]["status"] == "Enabled"
    block = resources["aws_s3_bucket_public_access_block.lake"]
    assert all(block[k] is True for k in ("block_public_acls", "block_public_policy", "ignore_public_acls",
                                          "restrict_public_buckets"))
    sse = resources["aws_s3_bucket_server_side_encryption_configuration.lake"]["rule"][0]
    assert sse["apply_server_side_encryption_by_default"][0]["sse_algorithm"] in ("AES256", "aws:kms")
    for bucket in LAKE_BUCKETS:
        lifecycle = resources[f"aws_s3_bucket_lifecycle_configuration.{bucket}"]
        assert lifecycle["bucket"] == f'${{aws_s3_bucket.lake["{bucket}"].id}}'
        rules = lifecycle["rule"]
        assert any("noncurrent_version_expiration" in r and "abort_incomplete_multipart_upload" in r for r in rules)
    compute_logs = [r for r in resources["aws_s3_bucket_lifecycle_configuration.processed"]["rule"]
                    if r["id"] == "dagster-compute-logs"]
    assert compute_logs and compute_logs[0]["filter"][0]["prefix"] == "${var.compute_logs_prefix}/"


def test_the_bucket_policy_refuses_overwriting_exactly_the_delta_commit_files(terraform, tmp_path):
    """Every commit file delta-rs writes falls under the Deny (unless put-if-absent); checkpoints, data files and
    _last_checkpoint, which are overwritten or not conditional, do not."""
    import fnmatch

    import pyarrow as pa

    from totesys_platform.lake.delta import LakeZone
    from totesys_platform.lake.maintenance import maintain_table

    (deny,) = [s for s in policy_statements(terraform)["lake_bucket"] if s.get("sid") == "DenyOverwritingDeltaCommits"]
    assert deny["effect"] == "Deny" and deny["actions"] == ["s3:PutObject"]
    assert deny["condition"] == [{"test": "Null", "variable": "s3:if-none-match", "values": ["true"]}]
    (resource,) = deny["resources"]
    pattern = resource.replace("${each.value.arn}/", "")

    table = LakeZone((tmp_path / "lake").as_uri()).table("sales_order")
    for i in range(3):
        table.append(pa.table({"id": pa.array([i], pa.int32())}), read=table.snapshot(), stage="extract",
                     state={"i": i}, rows=1)
    maintain_table(table, retention_hours=0)
    keys = [p.relative_to(tmp_path).as_posix() for p in (tmp_path / "lake").rglob("*") if p.is_file()]
    denied = {k for k in keys if fnmatch.fnmatchcase(k, pattern)}
    commits = {k for k in keys if "/_delta_log/" in k and k.endswith(".json")}
    assert commits and denied == commits, (pattern, sorted(keys))
    assert any(k.endswith(".checkpoint.parquet") for k in keys) and any(k.endswith("_last_checkpoint") for k in keys)


def test_alerts_logs_and_secrets_exist_and_secret_values_stay_out_of_state(terraform):
    resources = declared(terraform, "resource")
    assert "aws_sns_topic.alerts" in resources
    assert resources["aws_sns_topic_subscription.alert_email"]["count"] == '${var.alert_email == "" ? 0 : 1}'
    assert resources["aws_cloudwatch_log_group.pipeline"]["retention_in_days"] == "${var.log_retention_days}"
    assert resources["aws_secretsmanager_secret.pipeline"]["for_each"] == "${local.secrets}"
    assert not [k for k in resources if k.startswith("aws_secretsmanager_secret_version.")], (
        "secret values must be set outside Terraform, or they land in the state file")
    variables = declared(terraform, "variable")
    assert not [n for n in variables if re.search(r"password|secret_value|db_url", n)]


def test_terraform_secrets_cover_the_secret_variables_of_the_env_example():
    secrets = set(re.findall(r'"[a-z-]+"\s*=\s*"([A-Z_]+)"', (TERRAFORM / "main.tf").read_text()))
    env = example_env()
    assert secrets <= set(env)
    assert {k for k in env if "PASSWORD" in k and k != "WAREHOUSE_PG_PASSWORD"} | {
        "TOTESYS_DB_URL", "WAREHOUSE_DB_URL", "DAGSTER_PG_URL"} == secrets


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed on this machine")
def test_terraform_files_are_formatted():
    result = subprocess.run(["terraform", "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"run `terraform fmt -recursive deploy/terraform`:\n{result.stdout}"


# ---------------------------------------------------------------------------------------------------------
# deploy/iam/*.json

IAM_FILES = sorted(IAM_DIR.glob("*.json"))
LAKE_OBJECTS_JSON = {f"arn:aws:s3:::{b.upper()}_BUCKET/*" for b in LAKE_BUCKETS}


def json_statements(path: Path) -> list[dict]:
    policy = json.loads(path.read_text())
    assert policy["Version"] == "2012-10-17", path.name
    return policy["Statement"]


@pytest.mark.parametrize("path", IAM_FILES, ids=lambda p: p.name)
def test_iam_json_parses_and_has_no_wildcard_beyond_the_lake_objects(path):
    for statement in json_statements(path):
        assert not {"NotAction", "NotResource", "NotPrincipal"} & set(statement), path.name
        assert statement["Effect"] == "Allow"
        for action in as_list(statement["Action"]):
            assert "*" not in action, f"{path.name}: wildcard action {action!r}"
        for resource in as_list(statement.get("Resource", [])):
            assert resource in LAKE_OBJECTS_JSON or "*" not in resource, f"{path.name}: wildcard resource {resource!r}"
        principal = statement.get("Principal")
        assert principal != "*" and "*" not in json.dumps(principal or {}), path.name


def tf_resource_to_json(resource: str, secret_names: list[str]) -> list[str]:
    """A Terraform policy resource expression -> the ARNs with placeholders that deploy/iam uses."""
    if resource == "${[for secret in aws_secretsmanager_secret.pipeline : secret.arn]}":
        return [f"arn:aws:secretsmanager:REGION:ACCOUNT_ID:secret:SECRET_PREFIX/{name}-SUFFIX" for name in secret_names]
    replacements = {
        '${aws_s3_bucket.lake["ingestion"].arn}': "arn:aws:s3:::INGESTION_BUCKET",
        '${aws_s3_bucket.lake["processed"].arn}': "arn:aws:s3:::PROCESSED_BUCKET",
        "${aws_sns_topic.alerts.arn}": "arn:aws:sns:REGION:ACCOUNT_ID:ALERT_TOPIC",
        "${aws_cloudwatch_log_stream.pipeline.arn}":
            "arn:aws:logs:REGION:ACCOUNT_ID:log-group:LOG_GROUP:log-stream:LOG_STREAM",
    }
    for expression, arn in replacements.items():
        resource = resource.replace(expression, arn)
    assert "${" not in resource, f"no JSON placeholder for {resource!r}: extend tf_resource_to_json"
    return [resource]


def test_the_json_pipeline_policy_grants_exactly_what_terraform_grants(terraform):
    secret_names = re.findall(r'^\s*"([a-z-]+)"\s*=\s*"[A-Z_]+"', (TERRAFORM / "main.tf").read_text(), re.M)
    from_tf = {
        s["sid"]: (sorted(s["actions"]),
                   sorted(r for res in as_list(s["resources"]) for r in tf_resource_to_json(res, secret_names)))
        for s in policy_statements(terraform)["pipeline"]
    }
    from_json = {s["Sid"]: (sorted(as_list(s["Action"])), sorted(as_list(s["Resource"])))
                 for s in json_statements(IAM_DIR / "pipeline-policy.json")}
    assert from_json == from_tf


def test_the_json_trust_policy_matches_terraform(terraform):
    (statement,) = json_statements(IAM_DIR / "pipeline-trust-policy.json")
    services = declared(terraform, "variable")["pipeline_trusted_services"]["default"]
    assert sorted(statement["Principal"]["Service"]) == sorted(services)
    (tf_statement,) = policy_statements(terraform)["pipeline_trust"]
    assert as_list(statement["Action"]) == tf_statement["actions"] == ["sts:AssumeRole"]


# ---------------------------------------------------------------------------------------------------------
# The pipeline policy, enforced by a moto server (S3 authorises per bucket and object ARN)


@pytest.fixture
def enforcing_s3():
    """A private moto server whose IAM enforcement we can switch on without touching the shared one."""
    from totesys_platform_tests.moto_server import moto_server

    env = {**os.environ, "AWS_ACCESS_KEY_ID": "admin", "AWS_SECRET_ACCESS_KEY": "admin",
           "AWS_DEFAULT_REGION": "eu-west-2"}
    with moto_server(env) as endpoint:
        yield endpoint


def test_the_pipeline_policy_allows_the_lake_calls_and_nothing_beyond_the_two_buckets(enforcing_s3, monkeypatch):
    import boto3
    import requests
    from botocore.exceptions import ClientError

    def client(service, key, secret):
        return boto3.client(service, endpoint_url=enforcing_s3, region_name="eu-west-2",
                            aws_access_key_id=key, aws_secret_access_key=secret)

    admin = client("s3", "admin", "admin")
    buckets = {"INGESTION_BUCKET": "lake-ingestion", "PROCESSED_BUCKET": "lake-processed"}
    for name in [*buckets.values(), "someone-elses-bucket"]:
        admin.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
    admin.put_object(Bucket="someone-elses-bucket", Key="secret.csv", Body=b"x")
    policy = (IAM_DIR / "pipeline-policy.json").read_text()
    for placeholder, bucket in buckets.items():
        policy = policy.replace(placeholder, bucket)
    # moto authorises a batch DeleteObjects (vacuum's call) as s3:DeleteObject on the *bucket* before checking
    # each key; AWS checks only each key. Granting that here, in the test only, keeps the shipped policy minimal.
    document = json.loads(policy)
    document["Statement"].append({"Sid": "MotoBatchDeleteQuirk", "Effect": "Allow", "Action": ["s3:DeleteObject"],
                                  "Resource": [f"arn:aws:s3:::{b}" for b in buckets.values()]})
    policy = json.dumps(document)
    iam = client("iam", "admin", "admin")
    iam.create_user(UserName="pipeline")
    iam.put_user_policy(UserName="pipeline", PolicyName="pipeline", PolicyDocument=policy)
    key = iam.create_access_key(UserName="pipeline")["AccessKey"]
    requests.post(f"{enforcing_s3}/moto-api/reset-auth", data=b"0", timeout=5).raise_for_status()

    s3 = client("s3", key["AccessKeyId"], key["SecretAccessKey"])
    # The calls the object store and the step-log manager make.
    for bucket in buckets.values():
        # (head_bucket is left out: moto authorises it as "s3:HeadBucket", an action IAM does not have;
        # AWS authorises HeadBucket with s3:ListBucket, which list_objects_v2 below exercises.)
        s3.put_object(Bucket=bucket, Key="lake/reports/r.html", Body=b"{}", IfNoneMatch="*")
        assert s3.get_object(Bucket=bucket, Key="lake/reports/r.html")["Body"].read() == b"{}"
        s3.head_object(Bucket=bucket, Key="lake/reports/r.html")
        listed = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="lake/")
        assert [o["Key"] for page in listed for o in page.get("Contents", [])] == ["lake/reports/r.html"]
        upload = s3.create_multipart_upload(Bucket=bucket, Key="lake/big.parquet")
        part = s3.upload_part(Bucket=bucket, Key="lake/big.parquet", UploadId=upload["UploadId"], PartNumber=1,
                              Body=b"p")
        s3.complete_multipart_upload(Bucket=bucket, Key="lake/big.parquet", UploadId=upload["UploadId"],
                                     MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]})
        aborted = s3.create_multipart_upload(Bucket=bucket, Key="lake/orphan.parquet")
        s3.abort_multipart_upload(Bucket=bucket, Key="lake/orphan.parquet", UploadId=aborted["UploadId"])
        s3.delete_object(Bucket=bucket, Key="lake/big.parquet")

    # The calls Delta Lake (delta-rs's own S3 client) makes: the commit-exclusivity probe, creating a table,
    # commits (put-if-absent), reads, the change feed, a merge, compaction, checkpoints and vacuum.
    import pyarrow as pa

    from totesys_platform.lake.delta import LakeZone
    from totesys_platform.lake.maintenance import maintain_table

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    for bucket in buckets.values():
        table = LakeZone(f"s3://{bucket}/lake", endpoint_url=enforcing_s3).table("currency")
        for i in (1, 2):
            rows = pa.table({"currency_id": pa.array([i], pa.int32()), "currency_code": ["GBP"]})
            table.merge(rows, "currency_id", read=table.snapshot(), stage="process", state={"n": i})
        assert table.changes(0, table.snapshot())["currency_id"].to_pylist() == [2]
        report = maintain_table(table, retention_hours=0)
        assert report.files_after == 1 and table.snapshot().state == {"n": 2}
        assert sorted(table.read()["currency_id"].to_pylist()) == [1, 2]

    def denied(call, **kwargs):
        with pytest.raises(ClientError) as err:
            call(**kwargs)
        assert err.value.response["Error"]["Code"] == "AccessDenied", err.value.response["Error"]

    denied(s3.get_object, Bucket="someone-elses-bucket", Key="secret.csv")
    denied(s3.put_object, Bucket="someone-elses-bucket", Key="x", Body=b"x")
    denied(s3.list_objects_v2, Bucket="someone-elses-bucket")
    denied(s3.list_buckets)
    denied(s3.delete_bucket_policy, Bucket="lake-ingestion")
    denied(s3.put_bucket_versioning, Bucket="lake-processed", VersioningConfiguration={"Status": "Suspended"})
    denied(s3.create_bucket, Bucket="new-bucket", CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})


# ---------------------------------------------------------------------------------------------------------
# deploy/sql: the database roles on the real PostgreSQL


def as_role(url: str, role: str) -> str:
    """The same database, logged in as `role` (the test server trusts loopback connections)."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{role}@{rest.split('@', 1)[1]}"


def drop_roles(admin_url: str, *roles: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for role in roles:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(role)))
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def run_script(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute((SQL_DIR / name).read_text())


@pytest.fixture
def extractor_db(totesys_url):
    with psycopg.connect(totesys_url, autocommit=True) as conn:
        conn.execute("INSERT INTO currency (currency_code, created_at, last_updated) "
                     "VALUES ('GBP', '2024-01-02 03:04:05.678', '2024-01-02 03:04:05.678')")
    run_script(totesys_url, "totesys_extractor.sql")
    run_script(totesys_url, "totesys_extractor.sql")  # re-runnable
    yield totesys_url, as_role(totesys_url, "totesys_extractor")
    drop_roles(totesys_url, "totesys_extractor")


def test_the_extractor_reads_the_eleven_tables_and_the_activity_counters(extractor_db):
    from totesys_platform.source import contract

    _, url = extractor_db
    with psycopg.connect(url, autocommit=True) as conn:
        for table in contract.TABLE_NAMES:
            conn.execute(sql.SQL("SELECT * FROM {} LIMIT 1").format(sql.Identifier("public", table)))
        with conn.cursor().copy("COPY (SELECT currency_code FROM currency) TO STDOUT") as copy:
            assert b"".join(bytes(block) for block in copy) == b"GBP\n"
        counted = {name for (name,) in conn.execute(
            "SELECT relname FROM pg_stat_user_tables WHERE schemaname = 'public'")}
        assert set(contract.TABLE_NAMES) <= counted
        columns = conn.execute("SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                               "WHERE c.relname = 'sales_order' AND a.attnum > 0").fetchone()[0]
        assert columns == len(contract.SOURCE_TABLES["sales_order"].columns)


def test_the_extractor_can_read_nothing_else_and_write_nothing(extractor_db):
    admin_url, url = extractor_db
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA audit; CREATE TABLE audit.log (x int)")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SHOW default_transaction_read_only").fetchone()[0] == "on"
            for statement in ("SELECT * FROM _prisma_migrations", "SELECT * FROM audit.log",
                              "INSERT INTO currency (currency_code, last_updated) VALUES ('USD', now())",
                              "UPDATE currency SET currency_code = 'EUR'", "DELETE FROM currency",
                              "TRUNCATE currency", "CREATE TABLE public.scratch (x int)"):
                # Past the read-only default too: the privileges themselves must refuse.
                with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                    conn.execute("SET TRANSACTION READ WRITE")
                    conn.execute(statement)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute("DROP SCHEMA audit CASCADE")


@pytest.fixture
def loader_db(warehouse_url):
    run_script(warehouse_url, "warehouse_loader.sql")
    run_script(warehouse_url, "warehouse_loader.sql")  # re-runnable
    yield warehouse_url, as_role(warehouse_url, "warehouse_loader")
    drop_roles(warehouse_url, "warehouse_loader", "warehouse_reader")


def test_the_loader_migrates_loads_and_resets_its_own_warehouse(loader_db):
    import pyarrow as pa

    from totesys_platform.star_schema import TARGET_TABLES
    from totesys_platform.warehouse.loader import load_table
    from totesys_platform.warehouse.reads import read_table
    from totesys_platform.lake.delta import Position
    from totesys_platform.warehouse.schema import ensure_schema, get_load_position, reset_warehouse, set_load_state

    admin_url, url = loader_db
    rows = pa.table({"currency_id": [1], "currency_code": ["GBP"], "currency_name": ["Pound Sterling"]},
                    schema=TARGET_TABLES["dim_currency"].arrow_schema)
    with psycopg.connect(url) as conn:
        ensure_schema(conn)
        ensure_schema(conn)  # a second process start: the schema check passes again
        with conn.transaction():
            load_table(conn, "dim_currency", rows, "upsert")  # COPY into a TEMP staging table, then merge
            set_load_state(conn, "dim_currency", Position("processed-table", 3, 0))
        assert read_table(conn, "dim_currency").to_pylist() == rows.to_pylist()
        assert get_load_position(conn, "dim_currency").version == 3
        reset_warehouse(conn)
        assert get_load_position(conn, "dim_currency") is None
    with psycopg.connect(admin_url) as conn:
        owners = {owner for (owner,) in conn.execute(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname IN ('public', 'totesys_meta')")}
        assert owners == {"warehouse_loader"}


def test_the_loader_cannot_touch_what_it_does_not_own(loader_db):
    admin_url, url = loader_db
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.finance_budget (x int); CREATE SCHEMA reporting; "
                     "CREATE TABLE reporting.kpi (x int)")
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in ("SELECT * FROM public.finance_budget", "INSERT INTO public.finance_budget VALUES (1)",
                          "DROP TABLE public.finance_budget", "SELECT * FROM reporting.kpi",
                          "CREATE TABLE reporting.mine (x int)", "CREATE ROLE intruder", "CREATE DATABASE other"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_the_reader_role_reads_the_loaders_tables_but_not_its_state(loader_db):
    from totesys_platform.warehouse.schema import ensure_schema

    admin_url, url = loader_db
    with psycopg.connect(url) as conn:
        ensure_schema(conn)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("CREATE ROLE analyst_for_test LOGIN IN ROLE warehouse_reader")
    try:
        with psycopg.connect(as_role(admin_url, "analyst_for_test"), autocommit=True) as conn:
            conn.execute("SELECT * FROM public.fact_sales_order_current")
            conn.execute("SELECT * FROM public.dim_date")
            for statement in ("SELECT * FROM totesys_meta.load_state", "DELETE FROM public.dim_date"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)
    finally:
        drop_roles(admin_url, "analyst_for_test")


def test_the_loader_would_not_need_create_on_the_database(loader_db):
    from totesys_platform.warehouse.schema import ensure_schema

    admin_url, url = loader_db
    with psycopg.connect(admin_url, autocommit=True) as conn:
        database = conn.execute("SELECT current_database()").fetchone()[0]
        conn.execute(sql.SQL("REVOKE CREATE ON DATABASE {} FROM warehouse_loader").format(
            sql.Identifier(database)))
    with psycopg.connect(url) as conn:
        ensure_schema(conn)


# ---------------------------------------------------------------------------------------------------------
# docs/deployment.md


def test_the_docs_show_the_sql_scripts_and_the_policy_exactly_as_shipped():
    docs = DOCS.read_text()
    sql_blocks = fenced_blocks(docs, "sql")
    for name in ("totesys_extractor.sql", "warehouse_loader.sql"):
        assert (SQL_DIR / name).read_text() in sql_blocks, f"docs/deployment.md shows an outdated {name}"
    policies = [json.loads(block) for block in fenced_blocks(docs, "json")]
    assert json.loads((IAM_DIR / "pipeline-policy.json").read_text()) in policies


def test_the_docs_ecs_run_launcher_snippet_is_valid_dagster_config(instance_env, tmp_path, monkeypatch):
    for name in ("TOTESYS_PIPELINE_ROLE_ARN", "TOTESYS_ECS_EXECUTION_ROLE_ARN", "TOTESYS_ECS_LOG_GROUP"):
        monkeypatch.setenv(name, "dummy")
    snippets = [b for b in fenced_blocks(DOCS.read_text(), "yaml") if "EcsRunLauncher" in b]
    assert len(snippets) == 1
    config = load_yaml(DEPLOY / "dagster.prod.yaml")
    config.update(yaml.safe_load(snippets[0]))
    checked = validated_instance_components(yaml.safe_dump(config), tmp_path / "home")
    launcher_cls, launcher = checked["run_launcher"]
    assert launcher_cls.__name__ == "EcsRunLauncher"
    forwarded = {v.split("=")[0] for v in launcher["env_vars"]} | {s["name"] for s in launcher["secrets"]}
    needed = set(PLATFORM_VARIABLES) - {"DAGSTER_HOME", "AWS_ENDPOINT_URL", "SMTP_PASSWORD"}
    assert needed - forwarded == set(), "the run tasks would miss these variables"
    assert "SMTP_PASSWORD" in {s["name"] for s in launcher["secrets"]}


def test_the_docs_helm_values_parse_and_keep_one_run_at_a_time():
    (values,) = [yaml.safe_load(b) for b in fenced_blocks(DOCS.read_text(), "yaml") if "dagster-user-deployments" in b]
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == GRPC_COMMAND[3:5]
    assert values["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert queued["maxConcurrentRuns"] == 1
    prod = load_yaml(DEPLOY / "dagster.prod.yaml")["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert queued["tagConcurrencyLimits"] == prod


def test_the_docs_cover_every_section_the_operator_needs():
    docs = DOCS.read_text()
    for heading in ("## Single host with Docker Compose", "### ECS with the EcsRunLauncher",
                    "### Kubernetes with the official Dagster Helm chart", "## AWS resources",
                    "### The pipeline's IAM policy", "## PostgreSQL roles"):
        assert heading in docs
    for path in re.findall(r"\]\(\.\./([^)#]+)\)", docs):
        assert (REPO / path).exists(), f"docs/deployment.md links to a missing {path}"
