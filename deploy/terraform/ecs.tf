# The platform on ECS Fargate: three always-on services (webserver, daemon, gRPC code location) and
# the task definition every run is started from (EcsRunLauncher, deploy/dagster.ecs.yaml). One image
# for all of them: <ECR repository>:<image_tag>. Container settings are environment variables;
# secrets are injected by ECS from Secrets Manager and never appear in a task definition.

locals {
  image = "${aws_ecr_repository.platform.repository_url}:${var.image_tag}"

  # deploy/dagster.ecs.yaml is baked into the image in its own DAGSTER_HOME (see the Dockerfile).
  ecs_dagster_home = "/opt/dagster/ecs_home"
  ecs_workspace    = "/opt/dagster/app/workspace.ecs.yaml"

  dagster_pg_host = var.dagster_pg_host != "" ? var.dagster_pg_host : one(aws_db_instance.dagster[*].address)

  # What every process that opens the Dagster instance (deploy/dagster.ecs.yaml) reads.
  instance_environment = {
    DAGSTER_HOME                    = local.ecs_dagster_home
    DAGSTER_PG_HOST                 = local.dagster_pg_host
    DAGSTER_PG_PORT                 = tostring(var.dagster_pg_port)
    DAGSTER_PG_USER                 = var.dagster_pg_user
    DAGSTER_PG_DB                   = var.dagster_pg_db
    DAGSTER_COMPUTE_LOG_BUCKET      = aws_s3_bucket.lake["processed"].id
    DAGSTER_COMPUTE_LOG_PREFIX      = var.compute_logs_prefix
    DAGSTER_ECS_RUN_TASK_DEFINITION = local.run_task_family
    DAGSTER_CODE_LOCATION_HOST      = "code-location.${local.name}.dagster.internal"
    AWS_REGION                      = var.aws_region
    AWS_DEFAULT_REGION              = var.aws_region
  }

  # The pipeline's own settings (deploy/.env.example), for the code location and the runs.
  pipeline_environment = merge(local.instance_environment, {
    LAKE_INGESTION_URL    = "s3://${aws_s3_bucket.lake["ingestion"].id}/${var.lake_prefix}"
    LAKE_PROCESSED_URL    = "s3://${aws_s3_bucket.lake["processed"].id}/${var.lake_prefix}"
    ALERT_SNS_TOPIC_ARN   = aws_sns_topic.alerts.arn
    CLOUDWATCH_LOG_GROUP  = aws_cloudwatch_log_group.pipeline.name
    CLOUDWATCH_LOG_STREAM = aws_cloudwatch_log_stream.pipeline.name
  }, var.pipeline_environment)

  dagster_service_secret_refs = [
    for key in local.dagster_service_secrets : { name = local.secrets[key], valueFrom = aws_secretsmanager_secret.pipeline[key].arn }
  ]
  pipeline_secret_refs = [
    for key in local.pipeline_task_secrets : { name = local.secrets[key], valueFrom = aws_secretsmanager_secret.pipeline[key].arn }
  ]

  container_defaults = {
    image     = local.image
    essential = true
    # Run as the image's unprivileged user; no extra kernel capabilities.
    user = "10001:10001"
    linuxParameters = {
      capabilities = { drop = ["ALL"] }
    }
  }
}

resource "aws_cloudwatch_log_group" "ecs" {
  #checkov:skip=CKV_AWS_158:Encrypted at rest by CloudWatch Logs' own key; a customer-managed KMS key would need kms:* grants for every ECS role (the platform holds no KMS key by design, see iam.tf).
  #checkov:skip=CKV_AWS_338:Container stdout is operational, not audit data; run history lives in Dagster's database and step logs in S3. Retention is var.ecs_log_retention_days.
  count = local.ecs

  name              = local.ecs_log_group_name
  retention_in_days = var.ecs_log_retention_days
}

resource "aws_ecs_cluster" "dagster" {
  #checkov:skip=CKV_AWS_65:Container Insights is off to keep the idle cost low (it bills per metric); turn it on in the console when needed. Runs report to Dagster and CloudWatch Logs.
  count = local.ecs

  name = local.cluster_name

  setting {
    name  = "containerInsights"
    value = "disabled"
  }
}

resource "aws_ecs_cluster_capacity_providers" "dagster" {
  count = local.ecs

  cluster_name       = aws_ecs_cluster.dagster[0].name
  capacity_providers = ["FARGATE"]

  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
  }
}

# --- task definitions ---------------------------------------------------------------------------------

resource "aws_ecs_task_definition" "webserver" {
  #checkov:skip=CKV_AWS_336:Dagster writes under $DAGSTER_HOME/storage and the temp folder; a read-only root file system is not verified with the platform yet.
  count = local.ecs

  family                   = "${local.name}-webserver"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.service_sizes["webserver"].cpu
  memory                   = var.service_sizes["webserver"].memory
  execution_role_arn       = aws_iam_role.ecs_execution_dagster[0].arn
  task_role_arn            = aws_iam_role.webserver[0].arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  container_definitions = jsonencode([merge(local.container_defaults, {
    name         = "webserver"
    command      = ["dagster-webserver", "-h", "0.0.0.0", "-p", tostring(local.webserver_port), "-w", local.ecs_workspace]
    portMappings = [{ containerPort = local.webserver_port, protocol = "tcp" }]
    environment  = [for k, v in local.instance_environment : { name = k, value = v }]
    secrets      = local.dagster_service_secret_refs
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = local.ecs_log_group_name
        awslogs-region        = var.aws_region
        awslogs-stream-prefix = "webserver"
      }
    }
  })])
}

resource "aws_ecs_task_definition" "daemon" {
  #checkov:skip=CKV_AWS_336:Dagster writes under $DAGSTER_HOME/storage and the temp folder; a read-only root file system is not verified with the platform yet.
  count = local.ecs

  family                   = "${local.name}-daemon"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.service_sizes["daemon"].cpu
  memory                   = var.service_sizes["daemon"].memory
  execution_role_arn       = aws_iam_role.ecs_execution_dagster[0].arn
  task_role_arn            = aws_iam_role.daemon[0].arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  container_definitions = jsonencode([merge(local.container_defaults, {
    name        = "daemon"
    command     = ["dagster-daemon", "run", "-w", local.ecs_workspace]
    environment = [for k, v in local.instance_environment : { name = k, value = v }]
    secrets     = local.dagster_service_secret_refs
    healthCheck = {
      command     = ["CMD", "dagster-daemon", "liveness-check"]
      interval    = 60
      timeout     = 30
      retries     = 3
      startPeriod = 120
    }
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = local.ecs_log_group_name
        awslogs-region        = var.aws_region
        awslogs-stream-prefix = "daemon"
      }
    }
  })])
}

resource "aws_ecs_task_definition" "code_location" {
  #checkov:skip=CKV_AWS_336:Dagster writes under $DAGSTER_HOME/storage and the temp folder; a read-only root file system is not verified with the platform yet.
  count = local.ecs

  family                   = "${local.name}-code-location"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.service_sizes["code_location"].cpu
  memory                   = var.service_sizes["code_location"].memory
  execution_role_arn       = aws_iam_role.ecs_execution_pipeline[0].arn
  task_role_arn            = aws_iam_role.pipeline.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  container_definitions = jsonencode([merge(local.container_defaults, {
    name         = "code-location"
    command      = ["dagster", "api", "grpc", "-m", "totesys_platform.definitions", "-h", "0.0.0.0", "-p", tostring(local.code_location_port)]
    portMappings = [{ containerPort = local.code_location_port, protocol = "tcp" }]
    environment  = [for k, v in local.pipeline_environment : { name = k, value = v }]
    secrets      = local.pipeline_secret_refs
    healthCheck = {
      command     = ["CMD", "dagster", "api", "grpc-health-check", "-p", tostring(local.code_location_port)]
      interval    = 30
      timeout     = 20
      retries     = 5
      startPeriod = 60
    }
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = local.ecs_log_group_name
        awslogs-region        = var.aws_region
        awslogs-stream-prefix = "code-location"
      }
    }
  })])
}

# Every run is one task of this definition. EcsRunLauncher names it (DAGSTER_ECS_RUN_TASK_DEFINITION),
# replaces the command with `dagster api execute_run ...` and sets cpu/memory from the job's
# ecs/cpu and ecs/memory tags (totesys_platform/automation/run_sizes.py); these sizes are the default.
resource "aws_ecs_task_definition" "run" {
  #checkov:skip=CKV_AWS_336:Dagster writes under $DAGSTER_HOME/storage and the temp folder; a read-only root file system is not verified with the platform yet.
  count = local.ecs

  family                   = local.run_task_family
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.run_default_size.cpu
  memory                   = var.run_default_size.memory
  execution_role_arn       = aws_iam_role.ecs_execution_pipeline[0].arn
  task_role_arn            = aws_iam_role.pipeline.arn

  ephemeral_storage {
    size_in_gib = var.run_ephemeral_storage_gib
  }

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  container_definitions = jsonencode([merge(local.container_defaults, {
    name        = "run"
    environment = [for k, v in local.pipeline_environment : { name = k, value = v }]
    secrets     = local.pipeline_secret_refs
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = local.ecs_log_group_name
        awslogs-region        = var.aws_region
        awslogs-stream-prefix = "run"
      }
    }
  })])
}

# --- services -----------------------------------------------------------------------------------------

resource "aws_ecs_service" "code_location" {
  count = local.ecs

  name             = "code-location"
  cluster          = aws_ecs_cluster.dagster[0].id
  task_definition  = aws_ecs_task_definition.code_location[0].arn
  desired_count    = 1
  launch_type      = "FARGATE"
  platform_version = "LATEST"
  # A new image starts before the old one stops; runs in flight are separate tasks and carry on.
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.code_location[0].id]
    assign_public_ip = false
  }

  service_registries {
    registry_arn = aws_service_discovery_service.code_location[0].arn
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  lifecycle {
    precondition {
      condition     = var.vpc_id != "" && length(var.private_subnet_ids) >= 2 && var.image_tag != ""
      error_message = "ecs_enabled needs vpc_id, at least two private_subnet_ids and an image_tag."
    }
  }
}

resource "aws_ecs_service" "daemon" {
  count = local.ecs

  name             = "daemon"
  cluster          = aws_ecs_cluster.dagster[0].id
  task_definition  = aws_ecs_task_definition.daemon[0].arn
  desired_count    = 1
  launch_type      = "FARGATE"
  platform_version = "LATEST"
  # Exactly one daemon: two would each evaluate the schedules and sensors.
  deployment_minimum_healthy_percent = 0
  deployment_maximum_percent         = 100

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.runs[0].id]
    assign_public_ip = false
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  depends_on = [aws_ecs_service.code_location]
}

resource "aws_ecs_service" "webserver" {
  count = local.ecs

  name             = "webserver"
  cluster          = aws_ecs_cluster.dagster[0].id
  task_definition  = aws_ecs_task_definition.webserver[0].arn
  desired_count    = 1
  launch_type      = "FARGATE"
  platform_version = "LATEST"

  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  health_check_grace_period_seconds  = 120

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.webserver[0].id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.webserver[0].arn
    container_name   = "webserver"
    container_port   = local.webserver_port
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  depends_on = [aws_lb_listener.webserver_http, aws_lb_listener.webserver_https, aws_ecs_service.code_location]
}
