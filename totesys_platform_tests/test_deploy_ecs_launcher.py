"""deploy/dagster.ecs.yaml in Dagster, and dagster-aws's EcsRunLauncher launching runs on moto's ECS, offline.

Real parts: Dagster's own config schemas; a real ECS instance on the embedded PostgreSQL; EcsRunLauncher launching,
watching and stopping run tasks on moto's ECS and EC2 APIs (moto in server mode, its own subprocess on loopback).
The ECS task metadata endpoint, which only exists inside a Fargate task, is a small loopback HTTP server that
describes a daemon task really started on moto.

What moto cannot show: Fargate placing and running the container, IAM resource-level checks (moto authorises ECS
actions against "*" only), iam:PassRole and ecs:TagResource on RunTask, task-level cpu/memory validation.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import threading
import time

import pytest
import yaml

from totesys_platform_tests.test_deploy_ecs import (  # noqa: F401 (terraform is a fixture)
    DEPLOY, ECS_YAML, policy_actions, resource_block, terraform,
)
from totesys_platform_tests.test_deployment import validated_instance_components

REGION = "eu-west-2"

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
    from totesys_platform_tests.moto_server import moto_server

    with moto_server() as endpoint:
        yield endpoint


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
    from totesys_platform.defs.automation.jobs import totesys_new_data_sensor
    from totesys_platform.automation.run_sizes import ecs_tags
    from totesys_platform.definitions import defs
    from totesys_platform.defs.resources import TotesysDatabase
    from totesys_platform.source.contract import TABLE_NAMES

    def tick(cursor):
        context = dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), cursor=cursor,
                                          resources={"totesys": TotesysDatabase(db_url=totesys_url)}, definitions=defs)
        (run_request,) = totesys_new_data_sensor(context).run_requests
        return run_request

    first = tick(None)  # no cursor: nothing was ever loaded
    assert {k: first.tags[k] for k in ("ecs/cpu", "ecs/memory")} == ecs_tags("initial_load")
    later = tick(encode_cursor({table: -1 for table in TABLE_NAMES}))  # every table changed since a cursor
    assert not {"ecs/cpu", "ecs/memory"} & set(later.tags)  # the job's own tick size applies
