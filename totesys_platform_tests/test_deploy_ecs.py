"""The ECS Fargate deployment's Terraform (deploy/terraform/ecs*.tf, rds.tf, ecr.tf), checked offline.

Real parts: the Terraform parsed by python-hcl2 and scanned by checkov (in its own virtualenv: its pins conflict
with ours). The Dagster side (deploy/dagster.ecs.yaml, EcsRunLauncher on moto's ECS) is test_deploy_ecs_launcher.py.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from totesys_platform.automation.run_sizes import RUN_SIZES
from totesys_platform_tests.test_deployment import (
    PLATFORM_VARIABLES, as_list, declared, interpolations, parse_tf, policy_statements,
)

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
TERRAFORM = DEPLOY / "terraform"
ECS_YAML = DEPLOY / "dagster.ecs.yaml"
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
# The GitHub Actions workflows and docs/deployment.md

WORKFLOWS = REPO / ".github" / "workflows"
DOCS = REPO / "docs" / "deployment.md"


def workflow(name: str) -> dict:
    document = yaml.safe_load((WORKFLOWS / name).read_text())
    document["on"] = document.pop(True, document.get("on"))  # YAML 1.1 reads the key `on` as true
    return document


def test_pull_requests_run_the_test_suite_as_ci_does():
    ci = workflow("ci.yaml")
    assert "pull_request" in ci["on"] and "workflow_call" in ci["on"]
    steps = ci["jobs"]["test"]["steps"]
    assert any(step.get("run") == "bash .ci/run" for step in steps)
    assert "3.11" in {step.get("with", {}).get("python-version") for step in steps}


def test_main_builds_pushes_plans_and_applies_only_after_approval():
    deploy = workflow("deploy.yaml")
    assert deploy["on"]["push"]["branches"] == ["main"]
    jobs = deploy["jobs"]
    assert jobs["test"]["uses"] == "./.github/workflows/ci.yaml"
    assert (jobs["image"]["needs"], jobs["plan"]["needs"], jobs["apply"]["needs"]) == ("test", "image", "plan")
    assert jobs["apply"]["environment"] == "production"
    assert "environment" not in jobs["plan"]  # the plan runs unattended; only the apply waits for a reviewer
    apply_runs = " ".join(step.get("run", "") for step in jobs["apply"]["steps"])
    assert "terraform apply -input=false -lock-timeout=5m tfplan" in apply_runs  # exactly the reviewed plan
    plan_runs = " ".join(step.get("run", "") for step in jobs["plan"]["steps"])
    assert '-var "image_tag=$IMAGE_TAG"' in plan_runs and deploy["env"]["IMAGE_TAG"] == "${{ github.sha }}"
    assert not deploy["concurrency"]["cancel-in-progress"]


def test_workflows_pin_every_action_and_take_credentials_from_secrets_only():
    docs = DOCS.read_text()
    for path in WORKFLOWS.glob("*.yaml"):
        text = path.read_text()
        for action in re.findall(r"uses:\s*([\w./-]+@[\w.-]+)", text):
            assert re.search(r"@v\d+\.\d+\.\d+$", action), f"{path.name}: pin {action} to an exact release"
        assert not re.search(r"AKIA[0-9A-Z]{16}|aws-secret-access-key", text), path.name
        for secret in set(re.findall(r"secrets\.([A-Z_]+)", text)):
            assert f"`{secret}`" in docs, f"docs/deployment.md does not tell how to set the secret {secret}"



def ecs_docs() -> str:
    text = DOCS.read_text()
    start = text.index("## Deploying on ECS Fargate")
    return text[start:text.index("\n## ", start + 3)]


def test_the_docs_ecs_section_names_what_an_operator_sets(terraform):
    section = ecs_docs()
    for name in ("ecs_enabled", "vpc_id", "private_subnet_ids", "webserver_allowed_cidrs", "image_tag",
                 "webserver_certificate_arn", "dagster_pg_host", "pipeline_environment", "service_sizes",
                 "run_default_size", "dagster_db_credential_version", "rds_deletion_protection"):
        assert f"`{name}" in section, f"the ECS section never mentions {name}"
        assert name in declared(terraform, "variable")
    for secret in tf_locals(terraform)["pipeline_task_secrets"]:
        assert f"`{secret}`" in section, f"the ECS section does not say what to put in {secret}"
    for target in re.findall(r"-target=(\S+)", section):
        assert target in declared(terraform, "resource")
    for output in re.findall(r"terraform output -raw (\w+)", section):
        assert output in declared(terraform, "output")
    assert "**Which path.**" in DOCS.read_text()


def test_the_docs_size_table_is_the_one_the_jobs_use():
    rows = re.findall(r"^\|[^|]*\|\s*`(\w+)`\s*\|\s*([\d.]+) vCPU, (\d+) GiB\s*\|$", ecs_docs(), re.M)
    documented = {(job, int(float(cpu) * 1024), int(gib) * 1024) for job, cpu, gib in rows}
    import totesys_platform.definitions as definitions

    for job in ("totesys_etl", "validate", "refresh_sales_report", "lake_maintenance", "rebuild_warehouse"):
        tags = definitions.defs.resolve_job_def(job).run_tags
        assert (job, int(tags["ecs/cpu"]), int(tags["ecs/memory"])) in documented, job
    initial = RUN_SIZES["initial_load"]
    assert ("totesys_etl", *initial) in documented
