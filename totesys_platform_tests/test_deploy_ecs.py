"""The ECS Fargate deployment (deploy/terraform/ecs*.tf, rds.tf, ecr.tf; deploy/dagster.ecs.yaml), checked offline.

Real parts: the Terraform parsed by python-hcl2 and scanned by checkov (in its own virtualenv: its pins conflict
with ours); Dagster's own config schemas; a real production instance on the embedded PostgreSQL; and
dagster-aws's EcsRunLauncher launching, watching and stopping run tasks on moto's ECS and EC2 APIs (moto in
server mode, its own subprocess on loopback). The ECS task metadata endpoint, which only exists inside a
Fargate task, is a small loopback HTTP server that describes a daemon task really started on moto.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from totesys_platform.automation.run_sizes import RUN_SIZES
from totesys_platform_tests.test_deployment import (
    PLATFORM_VARIABLES, as_list, declared, interpolations, parse_tf, policy_statements, validated_instance_components,
)

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
TERRAFORM = DEPLOY / "terraform"
ECS_YAML = DEPLOY / "dagster.ecs.yaml"
REGION = "eu-west-2"
# Valid Fargate CPU units -> memory (MiB) range.
FARGATE_MEMORY = {256: (512, 2048), 512: (1024, 4096), 1024: (2048, 8192), 2048: (4096, 16384), 4096: (8192, 30720)}


@pytest.fixture(scope="module")
def terraform() -> dict[str, list]:
    merged: dict[str, list] = {}
    for path in sorted(TERRAFORM.glob("*.tf")):
        for kind, bodies in parse_tf(path).items():
            merged.setdefault(kind, []).extend(bodies if isinstance(bodies, list) else [bodies])
    return merged


def tf_locals(terraform) -> dict:
    return {k: v for block in terraform.get("locals", []) for k, v in block.items()}


def tf_text() -> str:
    return "\n".join(p.read_text() for p in sorted(TERRAFORM.glob("*.tf")))


def resource_block(kind: str, name: str) -> str:
    """The source text of one resource block (for jsonencode bodies, which python-hcl2 keeps as expressions)."""
    text = tf_text()
    start = text.index(f'resource "{kind}" "{name}" {{')
    depth, i = 0, text.index("{", start)
    while True:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i + 1]
        i += 1


def policy_actions(terraform, document: str) -> set[str]:
    return {a for s in policy_statements(terraform)[document] for a in as_list(s["actions"])}


def env_names(config) -> set[str]:
    """Every {env: NAME} in a parsed YAML document."""
    if isinstance(config, dict):
        if set(config) == {"env"}:
            return {config["env"]}
        return set().union(*(env_names(v) for v in config.values())) if config else set()
    if isinstance(config, list):
        return set().union(*(env_names(v) for v in config)) if config else set()
    return set()


# ---------------------------------------------------------------------------------------------------------
# The Terraform is internally consistent


def test_every_declared_variable_is_used(terraform):
    used = {name for expression in interpolations(terraform) for name in re.findall(r"\bvar\.(\w+)", expression)}
    unused = set(declared(terraform, "variable")) - used
    assert not unused, f"declared but never used: {sorted(unused)}"


def test_every_role_a_task_definition_names_exists_and_trusts_ecs_tasks(terraform):
    resources = declared(terraform, "resource")
    data = declared(terraform, "data")
    definitions = {k: v for k, v in resources.items() if k.startswith("aws_ecs_task_definition.")}
    assert set(definitions) == {f"aws_ecs_task_definition.{n}" for n in ("webserver", "daemon", "code_location", "run")}
    for name, body in definitions.items():
        for field in ("execution_role_arn", "task_role_arn"):
            (role,) = re.findall(r"aws_iam_role\.(\w+)", body[field])
            assert f"aws_iam_role.{role}" in resources, f"{name}.{field} names a missing role {role}"
            trust = resources[f"aws_iam_role.{role}"]["assume_role_policy"]
            (document,) = re.findall(r"data\.aws_iam_policy_document\.(\w+)\.json", trust)
            (statement,) = data[f"aws_iam_policy_document.{document}"]["statement"]
            services = as_list(statement["principals"][0]["identifiers"])
            if services == ["${var.pipeline_trusted_services}"]:
                services = declared(terraform, "variable")["pipeline_trusted_services"]["default"]
            assert "ecs-tasks.amazonaws.com" in services, f"{role} cannot be assumed by ECS tasks"
        assert body["execution_role_arn"] != body["task_role_arn"], f"{name}: ECS itself and the code share a role"
        assert body["requires_compatibilities"] == ["FARGATE"] and body["network_mode"] == "awsvpc"


def test_runs_and_the_code_location_use_the_pipeline_role_and_the_services_their_own(terraform):
    resources = declared(terraform, "resource")
    role = {n: resources[f"aws_ecs_task_definition.{n}"]["task_role_arn"] for n in ("webserver", "daemon",
                                                                                    "code_location", "run")}
    assert role["run"] == role["code_location"] == "${aws_iam_role.pipeline.arn}"
    assert role["daemon"] == "${aws_iam_role.daemon[0].arn}"
    assert role["webserver"] == "${aws_iam_role.webserver[0].arn}"


def test_the_webserver_can_read_no_database_secret_but_dagsters_own(terraform):
    locals_ = tf_locals(terraform)
    assert locals_["dagster_service_secrets"] == ["dagster-pg-password"]
    assert {"totesys-db-url", "warehouse-db-url"} <= set(locals_["pipeline_task_secrets"])
    assert not {a for a in policy_actions(terraform, "webserver") if a.startswith(("secretsmanager:", "kms:"))}
    assert not {a for a in policy_actions(terraform, "daemon") if a.startswith(("secretsmanager:", "kms:"))}
    resources = declared(terraform, "resource")
    for service in ("webserver", "daemon"):
        assert resources[f"aws_ecs_task_definition.{service}"]["execution_role_arn"] == (
            "${aws_iam_role.ecs_execution_dagster[0].arn}")
        assert "local.dagster_service_secret_refs" in resource_block("aws_ecs_task_definition", service)
    (secrets,) = [s for s in policy_statements(terraform)["ecs_execution_dagster"]
                  if "secretsmanager:GetSecretValue" in s["actions"]]
    assert "local.dagster_service_secrets" in secrets["resources"]


def test_the_wildcards_of_the_ecs_roles_end_in_a_name_aws_makes_up(terraform):
    """local.* ARNs hide their wildcard from the wildcard test of test_deployment.py: only the last segment
    (a log stream or task id, chosen by ECS) may be a wildcard."""
    locals_ = tf_locals(terraform)
    assert locals_["ecs_log_streams_arn"].endswith(":log-group:${local.ecs_log_group_name}:log-stream:*")
    assert locals_["cluster_tasks_arn"].endswith(":task/${local.cluster_name}/*")
    assert locals_["run_task_family_arn"].endswith(":task-definition/${local.run_task_family}:*")  # any revision
    for name in ("ecs_log_streams_arn", "cluster_tasks_arn", "run_task_family_arn"):
        assert locals_[name].count("*") == 1


def test_the_ui_is_internal_and_open_to_the_allowed_networks_only(terraform):
    resources = declared(terraform, "resource")
    assert resources["aws_lb.webserver"]["internal"] is True
    (ingress,) = resources["aws_security_group.alb"]["ingress"]
    assert ingress["cidr_blocks"] == "${var.webserver_allowed_cidrs}"
    variable = declared(terraform, "variable")["webserver_allowed_cidrs"]
    assert variable["default"] == [] and "0.0.0.0/0" in variable["validation"][0]["condition"]
    for service in ("webserver", "daemon", "code_location"):
        network = resources[f"aws_ecs_service.{service}"]["network_configuration"][0]
        assert network["assign_public_ip"] is False and network["subnets"] == "${var.private_subnet_ids}"
    assert resources["aws_db_instance.dagster"]["publicly_accessible"] is False


def test_the_database_password_never_enters_terraform_state(terraform):
    db = declared(terraform, "resource")["aws_db_instance.dagster"]
    assert "password" not in db and db["password_wo"].startswith("${ephemeral.aws_secretsmanager_secret_version.")
    assert db["storage_encrypted"] is True
    (settings,) = terraform["terraform"]
    assert re.match(r">=\s*1\.(1[1-9]|[2-9]\d)", settings["required_version"]), "write-only arguments need 1.11+"


def test_every_job_size_and_service_size_is_a_valid_fargate_pair(terraform):
    variables = declared(terraform, "variable")
    sizes = [*RUN_SIZES.values(), *((s["cpu"], s["memory"]) for s in variables["service_sizes"]["default"].values()),
             (variables["run_default_size"]["default"]["cpu"], variables["run_default_size"]["default"]["memory"])]
    for cpu, memory in sizes:
        low, high = FARGATE_MEMORY[cpu]
        assert low <= memory <= high and memory % 1024 == 0 or (cpu == 256 and memory == 512), (cpu, memory)
    assert RUN_SIZES["initial_load"] > RUN_SIZES["tick"]


def test_the_task_definitions_give_every_variable_the_ecs_instance_and_the_pipeline_read(terraform):
    locals_ = tf_locals(terraform)
    instance_env = set(locals_["instance_environment"])
    secret_env = {locals_["secrets"][k] for k in locals_["dagster_service_secrets"]}
    assert env_names(yaml.safe_load(ECS_YAML.read_text())) <= instance_env | secret_env
    workspace = yaml.safe_load((DEPLOY / "workspace.ecs.yaml").read_text())
    assert env_names(workspace) <= instance_env
    pipeline_env = set(re.findall(r"\b([A-Z][A-Z_]+)\s*=", locals_["pipeline_environment"])) | instance_env
    pipeline_secrets = {locals_["secrets"][k] for k in locals_["pipeline_task_secrets"]}
    from_variable = {"TOTESYS_AUTOMATION", "ALERT_EMAIL_TO", "ALERT_EMAIL_FROM", "SMTP_HOST", "SMTP_PORT",
                     "SMTP_USERNAME", "SMTP_STARTTLS", "DAGSTER_UI_URL"}  # var.pipeline_environment, documented
    not_on_ecs = {"AWS_ENDPOINT_URL", "DAGSTER_PG_URL"}  # AWS itself; the URL is built from parts
    missing = set(PLATFORM_VARIABLES) - pipeline_env - pipeline_secrets - from_variable - not_on_ecs
    assert not missing, f"run tasks would miss {sorted(missing)}"
    assert all(name in declared(terraform, "variable")["pipeline_environment"]["description"] for name in from_variable)


def test_the_code_location_dns_name_is_the_one_the_workspace_reads(terraform):
    resources = declared(terraform, "resource")
    host = tf_locals(terraform)["instance_environment"]["DAGSTER_CODE_LOCATION_HOST"]
    service = resources["aws_service_discovery_service.code_location"]["name"]
    namespace = resources["aws_service_discovery_private_dns_namespace.dagster"]["name"]
    assert host == f"{service}.{namespace}"
    (entry,) = yaml.safe_load((DEPLOY / "workspace.ecs.yaml").read_text())["load_from"]
    assert entry["grpc_server"]["port"] == int(re.search(r"code_location_port\s*=\s*(\d+)", tf_text()).group(1))


def test_the_image_holds_the_ecs_instance_where_the_task_definitions_look(terraform):
    locals_ = tf_locals(terraform)
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f"COPY deploy/dagster.ecs.yaml {locals_['ecs_dagster_home']}/dagster.yaml" in dockerfile
    assert f"COPY deploy/workspace.ecs.yaml {locals_['ecs_workspace']}" in dockerfile
    assert f"{locals_['ecs_dagster_home']}/storage" in dockerfile  # writable, owned by the service user
    assert locals_["instance_environment"]["DAGSTER_HOME"] == "${local.ecs_dagster_home}"


# ---------------------------------------------------------------------------------------------------------
# checkov


CHECKOV_REQUIREMENTS = REPO / ".ci" / "checkov-requirements.txt"


def checkov_executable() -> Path:
    """checkov from .ci/checkov-requirements.txt, in a virtualenv under the user's cache folder (made once)."""
    digest = hashlib.sha256(CHECKOV_REQUIREMENTS.read_bytes()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "totesys-platform"
    venv = cache / f"checkov-{digest}"
    executable = venv / "bin" / "checkov"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "checkov.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two pytest sessions must not build it at once
        if not executable.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=120)
            result = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-qq", "--no-input",
                                     "--disable-pip-version-check", "-r", str(CHECKOV_REQUIREMENTS)],
                                    capture_output=True, text=True, timeout=600)
            if result.returncode != 0:
                (venv / "bin" / "checkov").unlink(missing_ok=True)
                message = f"could not install checkov from the package index: {result.stderr[-1500:]}"
                if os.environ.get("CI"):
                    pytest.fail(message)
                pytest.skip(message)
    return executable


def test_checkov_passes_on_the_terraform_with_every_skip_justified(tmp_path):
    var_file = tmp_path / "ecs.tfvars"
    var_file.write_text('ecs_enabled = true\nvpc_id = "vpc-1"\nprivate_subnet_ids = ["subnet-1", "subnet-2"]\n'
                        'image_tag = "abc123"\nwebserver_allowed_cidrs = ["10.20.0.0/16"]\n')
    result = subprocess.run(
        [str(checkov_executable()), "-d", str(TERRAFORM), "--framework", "terraform", "--var-file", str(var_file),
         "--skip-download", "--output", "json", "--compact"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "LOG_LEVEL": "ERROR"})
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    failed = [(c["check_id"], c["resource"]) for c in report.get("results", {}).get("failed_checks", [])]
    assert not failed and result.returncode == 0, f"checkov failures: {failed}\n{result.stderr[-2000:]}"
    summary = report["summary"]
    assert summary["passed"] > 100 and summary["parsing_errors"] == 0
    for check in report["results"]["skipped_checks"]:
        reason = (check.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason) >= 30, f"{check['check_id']} on {check['resource']} is skipped without a reason"
    # Every inline skip names a check and gives a reason.
    for line in tf_text().splitlines():
        if "checkov:skip" in line:
            assert re.fullmatch(r"\s*#checkov:skip=CKV2?_AWS_\d+:.{30,}", line), line


# ---------------------------------------------------------------------------------------------------------
# deploy/dagster.ecs.yaml in Dagster, and EcsRunLauncher on moto's ECS

ECS_ENV = {
    "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_USER": "dagster",
    "DAGSTER_PG_PASSWORD": "not-a-real-password", "DAGSTER_PG_DB": "dagster",
    "DAGSTER_COMPUTE_LOG_BUCKET": "dummy-bucket", "DAGSTER_COMPUTE_LOG_PREFIX": "dagster/compute-logs",
    "DAGSTER_ECS_RUN_TASK_DEFINITION": "totesys-prod-run", "DAGSTER_CODE_LOCATION_HOST": "code-location.x.internal",
}


def test_the_ecs_instance_config_passes_dagsters_schemas(tmp_path, monkeypatch):
    for name, value in ECS_ENV.items():
        monkeypatch.setenv(name, value)
    checked = validated_instance_components(ECS_YAML.read_text(), tmp_path / "home")
    launcher_cls, launcher = checked["run_launcher"]
    assert launcher_cls.__name__ == "EcsRunLauncher"
    assert launcher["task_definition"] == {"env": "DAGSTER_ECS_RUN_TASK_DEFINITION"}
    assert launcher["use_current_ecs_task_config"] is True and launcher["secrets_tag"] is None
    assert "secrets" not in launcher and "env_vars" not in launcher  # both live in the Terraform task definition
    storage_cls, storage = checked["storage"]
    assert storage_cls.__name__ == "DagsterPostgresStorage"
    assert storage["postgres_db"]["scheme"] == "postgresql+psycopg2"
    assert storage["postgres_db"]["password"] == "not-a-real-password"  # from the environment, not the file
    prod = yaml.safe_load((DEPLOY / "dagster.prod.yaml").read_text())
    ecs = yaml.safe_load(ECS_YAML.read_text())
    assert ecs["run_coordinator"] == prod["run_coordinator"]  # one run at a time, as on the single host
    assert ecs["run_retries"] == prod["run_retries"] and ecs["telemetry"] == {"enabled": False}
    assert not re.search(r"(?im)password:[ \t]*\S", re.sub(r"#.*", "", ECS_YAML.read_text()))


def test_the_ecs_workspace_passes_dagsters_schema(monkeypatch):
    from dagster._config import process_config, resolve_to_config_type
    from dagster._core.workspace.config_schema import WORKSPACE_CONFIG_SCHEMA

    monkeypatch.setenv("DAGSTER_CODE_LOCATION_HOST", "code-location.totesys-prod.dagster.internal")
    result = process_config(resolve_to_config_type(WORKSPACE_CONFIG_SCHEMA),
                            yaml.safe_load((DEPLOY / "workspace.ecs.yaml").read_text()))
    assert result.success, result.errors
    (entry,) = result.value["load_from"]
    assert entry["grpc_server"]["host"] == "code-location.totesys-prod.dagster.internal"
    assert entry["grpc_server"]["location_name"] == "totesys_platform"


@pytest.fixture(scope="module")
def moto_ecs():
    """A moto server of our own (ECS, EC2, S3), as a subprocess on loopback."""
    import urllib.request

    from totesys_platform.local.postgres import free_port

    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.1)
    yield endpoint
    server.terminate()
    server.wait(timeout=10)


class _TaskMetadata(http.server.BaseHTTPRequestHandler):
    """The ECS task metadata endpoint v4 (ECS_CONTAINER_METADATA_URI_V4): /task and the container itself."""

    document: dict = {}

    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = json.dumps(self.document["task"] if self.path.endswith("/task") else self.document["container"])
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def ecs_world(moto_ecs, pg_server, empty_db_url, tmp_path, monkeypatch):
    """On moto: a VPC, a subnet, the daemon's security group, the cluster, the run task definition and a running
    daemon task; a metadata endpoint describing that task; and DAGSTER_HOME holding deploy/dagster.ecs.yaml."""
    import boto3

    for name, value in {"AWS_ENDPOINT_URL": moto_ecs, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    ec2 = boto3.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    # As private DNS (the code location's Cloud Map name) needs; moto also names the task's ENI only then.
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName=f"runs-{vpc}", Description="daemon and runs", VpcId=vpc)["GroupId"]
    ecs = boto3.client("ecs")
    cluster = ecs.create_cluster(clusterName="totesys-prod-dagster")["cluster"]["clusterArn"]
    run_family = ECS_ENV["DAGSTER_ECS_RUN_TASK_DEFINITION"]
    container = re.search(r'name\s*=\s*"(\w+)"', resource_block("aws_ecs_task_definition", "run")).group(1)
    for family, name in ((run_family, container), ("totesys-prod-daemon", "daemon")):
        ecs.register_task_definition(
            family=family, requiresCompatibilities=["FARGATE"], networkMode="awsvpc", cpu="1024", memory="4096",
            taskRoleArn="arn:aws:iam::123456789012:role/totesys-prod-pipeline",
            executionRoleArn="arn:aws:iam::123456789012:role/totesys-prod-ecs-exec-pipeline",
            # Container-level cpu/memory: moto's RunTask needs them to place a task (Fargate does not).
            containerDefinitions=[{"name": name, "image": "123456789012.dkr.ecr.eu-west-2.amazonaws.com/p:abc",
                                   "essential": True, "cpu": 1024, "memory": 4096}])
    daemon = ecs.run_task(cluster=cluster, taskDefinition="totesys-prod-daemon", launchType="FARGATE",
                          networkConfiguration={"awsvpcConfiguration": {"subnets": [subnet], "securityGroups": [group]}}
                          )["tasks"][0]

    _TaskMetadata.document = {"task": {"Cluster": cluster, "TaskARN": daemon["taskArn"]}, "container": {"Name": "daemon"}}
    metadata = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TaskMetadata)
    threading.Thread(target=metadata.serve_forever, daemon=True).start()
    monkeypatch.setenv("ECS_CONTAINER_METADATA_URI_V4", f"http://127.0.0.1:{metadata.server_port}/v4/daemon")

    bucket = f"compute-logs-{os.getpid()}-{time.monotonic_ns()}"
    boto3.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    url = empty_db_url("dagster_ecs")  # postgresql://user@127.0.0.1:port/db on the embedded server
    parts = re.match(r"postgresql://([^@:]+)(?::[^@]*)?@([^:/]+):(\d+)/(\w+)", url)
    env = {**ECS_ENV, "DAGSTER_PG_USER": parts[1], "DAGSTER_PG_HOST": parts[2], "DAGSTER_PG_PORT": parts[3],
           "DAGSTER_PG_DB": parts[4], "DAGSTER_COMPUTE_LOG_BUCKET": bucket}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # The one deviation from the shipped file: the test server speaks no TLS, so sslmode=require is dropped.
    config = yaml.safe_load(ECS_YAML.read_text())
    assert config["storage"]["postgres"]["postgres_db"].pop("params") == {"sslmode": "require"}
    home = tmp_path / "ecs_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    yield {"home": home, "cluster": cluster, "subnet": subnet, "group": group, "daemon": daemon["taskArn"],
           "container": container, "run_family": run_family}
    metadata.shutdown()


class ApiCalls:
    """Every AWS API operation made by clients of boto3's default session, as IAM actions (ecs:RunTask, ...)."""

    def __init__(self):
        import boto3

        self.actions: list[str] = []
        boto3.setup_default_session(region_name=REGION)  # the launcher's clients come from this session
        boto3.DEFAULT_SESSION.events.register("before-call", self._record)

    @staticmethod
    def forget():
        import boto3

        boto3.DEFAULT_SESSION = None  # later tests get a fresh default session, without our hook

    def _record(self, model, **_):
        self.actions.append(f"{model.service_model.signing_name}:{model.name}")

    def take(self) -> set[str]:
        taken, self.actions = set(self.actions), []
        return taken


def create_run(instance, job_name: str, request_tags: dict[str, str] | None = None):
    """A run of one of the platform's jobs, with its tags as the daemon sets them (job tags, then the request's)."""
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    import totesys_platform.definitions as definitions

    job = definitions.defs.resolve_job_def(job_name)
    origin = ReconstructableRepository.for_module("totesys_platform.definitions", "defs").get_python_origin()
    from dagster._core.origin import JobPythonOrigin

    return instance.create_run_for_job(job_def=job, tags={**job.run_tags, **(request_tags or {})},
                                       job_code_origin=JobPythonOrigin(job_name, origin))


def test_each_run_becomes_a_fargate_task_sized_by_its_job_on_motos_ecs(ecs_world, terraform, request):
    import boto3
    from dagster import DagsterInstance
    from dagster._core.launcher import LaunchRunContext
    from dagster._core.launcher.base import WorkerStatus
    from dagster._grpc.types import ExecuteRunArgs
    from dagster._serdes import deserialize_value
    from dagster_aws.ecs import EcsRunLauncher

    from totesys_platform.automation.run_sizes import ecs_tags

    calls = ApiCalls()
    request.addfinalizer(ApiCalls.forget)
    instance = DagsterInstance.from_config(str(ecs_world["home"]))
    try:
        launcher = instance.run_launcher
        assert isinstance(launcher, EcsRunLauncher)
        init_actions = calls.take()
        ecs = boto3.client("ecs")
        cases = [("totesys_etl", None, ecs_tags("tick")),
                 ("totesys_etl", {**ecs_tags("initial_load"), "totesys/changed_tables": "a,b"}, ecs_tags("initial_load")),
                 ("rebuild_warehouse", None, ecs_tags("rebuild")),
                 ("lake_maintenance", None, ecs_tags("whole_history"))]
        launched = []
        for job_name, request_tags, expected in cases:
            run = create_run(instance, job_name, request_tags)
            launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
            run = instance.get_run_by_id(run.run_id)
            (task,) = ecs.describe_tasks(cluster=ecs_world["cluster"], tasks=[run.tags["ecs/task_arn"]],
                                         include=["TAGS"])["tasks"]
            launched.append((run, task))

            assert task["taskDefinitionArn"].split("/")[-1].startswith(f"{ecs_world['run_family']}:")
            assert task["clusterArn"] == ecs_world["cluster"] and task["launchType"] == "FARGATE"
            overrides = task["overrides"]
            assert (overrides["cpu"], overrides["memory"]) == (expected["ecs/cpu"], expected["ecs/memory"])
            (container,) = overrides["containerOverrides"]
            assert container["name"] == ecs_world["container"]
            assert (container["cpu"], container["memory"]) == (int(expected["ecs/cpu"]), int(expected["ecs/memory"]))
            assert container["command"][:3] == ["dagster", "api", "execute_run"]
            args = deserialize_value(container["command"][3], ExecuteRunArgs)
            assert args.run_id == run.run_id and args.job_origin.job_name == job_name
            assert "not-a-real-password" not in json.dumps(overrides)  # the instance ref holds {env: ...} only
            # In the daemon's network: its subnet, its security group (read from its network interface).
            eni = dict((d["name"], d["value"]) for d in task["attachments"][0]["details"])
            assert eni["subnetId"] == ecs_world["subnet"]
            groups = boto3.client("ec2").describe_network_interfaces(
                NetworkInterfaceIds=[eni["networkInterfaceId"]])["NetworkInterfaces"][0]["Groups"]
            assert [g["GroupId"] for g in groups] == [ecs_world["group"]]
            tags = {t["key"]: t["value"] for t in task["tags"]}
            assert tags["dagster/run_id"] == run.run_id and tags["Project"] == "totesys-platform"
        launch_actions = calls.take()

        run, task = launched[0]
        assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING
        monitor_actions = calls.take()
        assert launcher.terminate(run.run_id) is True
        terminate_actions = calls.take()
        (stopped,) = ecs.describe_tasks(cluster=ecs_world["cluster"], tasks=[task["taskArn"]])["tasks"]
        assert stopped["desiredStatus"] == "STOPPED"
    finally:
        instance.dispose()

    # What the launcher really called is what the Terraform grants: the daemon launches and monitors, the
    # webserver opens the launcher and terminates.
    daemon, webserver = policy_actions(terraform, "daemon"), policy_actions(terraform, "webserver")
    assert {"ecs:RunTask", "ecs:DescribeTasks", "ecs:DescribeTaskDefinition", "ec2:DescribeNetworkInterfaces"} <= (
        init_actions | launch_actions | monitor_actions)
    assert init_actions | launch_actions | monitor_actions | terminate_actions <= daemon, (
        sorted((init_actions | launch_actions | monitor_actions | terminate_actions) - daemon))
    assert init_actions | terminate_actions <= webserver, sorted((init_actions | terminate_actions) - webserver)


def test_the_sensors_first_run_is_sized_as_the_initial_load_and_later_ones_as_ticks(totesys_url):
    import dagster as dg

    from totesys_platform.automation.change_detection import encode_cursor
    from totesys_platform.automation.jobs import totesys_new_data_sensor
    from totesys_platform.automation.run_sizes import ecs_tags
    from totesys_platform.resources import TotesysDatabase
    from totesys_platform.source.contract import TABLE_NAMES

    def tick(cursor):
        context = dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), cursor=cursor,
                                          resources={"totesys": TotesysDatabase(db_url=totesys_url)})
        (run_request,) = totesys_new_data_sensor(context).run_requests
        return run_request

    first = tick(None)  # no cursor: nothing was ever loaded
    assert {k: first.tags[k] for k in ("ecs/cpu", "ecs/memory")} == ecs_tags("initial_load")
    later = tick(encode_cursor({table: -1 for table in TABLE_NAMES}))  # every table changed since a cursor
    assert not {"ecs/cpu", "ecs/memory"} & set(later.tags)  # the job's own tick size applies
