# Roles of the ECS deployment. Task roles (what the code in a container may call):
#   - runs and the code location: the pipeline role of iam.tf, unchanged;
#   - daemon: start, watch and stop run tasks of the one run task definition (EcsRunLauncher);
#   - webserver: watch and stop run tasks (the UI's "terminate"), read step logs. No secret at all.
# Execution roles (what ECS itself does before the container starts: pull the image, create the log
# stream, inject secrets): one for the pipeline containers, one for the Dagster services, which may
# read Dagster's own database password and no other secret.
#
# A few statements name "*" or a log-stream wildcard because AWS offers no narrower resource for
# those actions (ecr:GetAuthorizationToken, ecs:DescribeTaskDefinition, ec2:DescribeNetworkInterfaces)
# or because the names are made per task (log streams, run task ids); each says so in its sid.

locals {
  region = var.aws_region

  cluster_name        = "${local.name}-dagster"
  run_task_family     = "${local.name}-run"
  cluster_arn         = "arn:aws:ecs:${local.region}:${local.account_id}:cluster/${local.cluster_name}"
  cluster_tasks_arn   = "arn:aws:ecs:${local.region}:${local.account_id}:task/${local.cluster_name}/*"
  run_task_family_arn = "arn:aws:ecs:${local.region}:${local.account_id}:task-definition/${local.run_task_family}:*"
  ecs_log_group_name  = "/${var.name_prefix}/${var.environment}/ecs"
  ecs_log_streams_arn = "arn:aws:logs:${local.region}:${local.account_id}:log-group:${local.ecs_log_group_name}:log-stream:*"

  # Secrets each kind of container receives (name in local.secrets -> environment variable).
  dagster_service_secrets = ["dagster-pg-password"]
  pipeline_task_secrets   = ["totesys-db-url", "warehouse-db-url", "dagster-pg-password", "smtp-password"]
}

data "aws_iam_policy_document" "ecs_tasks_trust" {
  statement {
    sid     = "EcsTasksOfThisAccount"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    # Confused-deputy guard: only ECS acting for this account may assume these roles.
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

# --- execution roles ----------------------------------------------------------------------------------

data "aws_iam_policy_document" "ecs_execution_pipeline" {
  statement {
    sid       = "EcrLoginHasNoResourceLevelPermission"
    effect    = "Allow"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid       = "PullThePlatformImage"
    effect    = "Allow"
    actions   = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    resources = [aws_ecr_repository.platform.arn]
  }

  statement {
    sid       = "WriteContainerLogsStreamsNamedPerTask"
    effect    = "Allow"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = [local.ecs_log_streams_arn]
  }

  statement {
    sid       = "InjectPipelineSecrets"
    effect    = "Allow"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [for key in local.pipeline_task_secrets : aws_secretsmanager_secret.pipeline[key].arn]
  }
}

data "aws_iam_policy_document" "ecs_execution_dagster" {
  statement {
    sid       = "EcrLoginHasNoResourceLevelPermission"
    effect    = "Allow"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid       = "PullThePlatformImage"
    effect    = "Allow"
    actions   = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    resources = [aws_ecr_repository.platform.arn]
  }

  statement {
    sid       = "WriteContainerLogsStreamsNamedPerTask"
    effect    = "Allow"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = [local.ecs_log_streams_arn]
  }

  statement {
    sid       = "InjectDagsterDatabasePasswordOnly"
    effect    = "Allow"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [for key in local.dagster_service_secrets : aws_secretsmanager_secret.pipeline[key].arn]
  }
}

resource "aws_iam_role" "ecs_execution_pipeline" {
  count = local.ecs

  name                 = "${local.name}-ecs-exec-pipeline"
  description          = "ECS execution role of the code location and run tasks: image pull, container logs, pipeline secrets."
  assume_role_policy   = data.aws_iam_policy_document.ecs_tasks_trust.json
  max_session_duration = 3600
}

resource "aws_iam_role_policy" "ecs_execution_pipeline" {
  count = local.ecs

  name   = "execution"
  role   = aws_iam_role.ecs_execution_pipeline[0].id
  policy = data.aws_iam_policy_document.ecs_execution_pipeline.json
}

resource "aws_iam_role" "ecs_execution_dagster" {
  count = local.ecs

  name                 = "${local.name}-ecs-exec-dagster"
  description          = "ECS execution role of the webserver and daemon: image pull, container logs, Dagster's database password."
  assume_role_policy   = data.aws_iam_policy_document.ecs_tasks_trust.json
  max_session_duration = 3600
}

resource "aws_iam_role_policy" "ecs_execution_dagster" {
  count = local.ecs

  name   = "execution"
  role   = aws_iam_role.ecs_execution_dagster[0].id
  policy = data.aws_iam_policy_document.ecs_execution_dagster.json
}

# --- task role of the daemon: EcsRunLauncher ----------------------------------------------------------

data "aws_iam_policy_document" "daemon" {
  statement {
    sid       = "StartRunTasksOfTheRunTaskDefinitionOnly"
    effect    = "Allow"
    actions   = ["ecs:RunTask"]
    resources = [local.run_task_family_arn]

    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [local.cluster_arn]
    }
  }

  statement {
    sid       = "WatchTagAndStopTasksOfTheClusterTaskIdsAreRandom"
    effect    = "Allow"
    actions   = ["ecs:DescribeTasks", "ecs:StopTask", "ecs:TagResource"]
    resources = [local.cluster_tasks_arn]
  }

  statement {
    sid       = "DescribeTaskDefinitionHasNoResourceLevelPermission"
    effect    = "Allow"
    actions   = ["ecs:DescribeTaskDefinition"]
    resources = ["*"]
  }

  # use_current_ecs_task_config: a run starts in the daemon's subnets with its security groups, which
  # the launcher reads from the daemon task's network interface.
  statement {
    sid       = "DescribeNetworkInterfacesHasNoResourceLevelPermission"
    effect    = "Allow"
    actions   = ["ec2:DescribeNetworkInterfaces"]
    resources = ["*"]
  }

  statement {
    sid       = "PassOnlyTheRunRolesToEcs"
    effect    = "Allow"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.pipeline.arn, "arn:aws:iam::${local.account_id}:role/${local.name}-ecs-exec-pipeline"]

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ecs-tasks.amazonaws.com"]
    }
  }

  # Run monitoring quotes the last lines of a failed run task's log in the run's failure message.
  statement {
    sid       = "ReadRunTaskLogsStreamsNamedPerTask"
    effect    = "Allow"
    actions   = ["logs:GetLogEvents"]
    resources = [local.ecs_log_streams_arn]
  }
}

resource "aws_iam_role" "daemon" {
  count = local.ecs

  name                 = "${local.name}-dagster-daemon"
  description          = "Dagster daemon on ECS: launches, watches and stops run tasks. No data access."
  assume_role_policy   = data.aws_iam_policy_document.ecs_tasks_trust.json
  max_session_duration = 3600
}

resource "aws_iam_role_policy" "daemon" {
  count = local.ecs

  name   = "run-launcher"
  role   = aws_iam_role.daemon[0].id
  policy = data.aws_iam_policy_document.daemon.json
}

# --- task role of the webserver -----------------------------------------------------------------------

data "aws_iam_policy_document" "webserver" {
  statement {
    sid       = "WatchAndStopTasksOfTheClusterTaskIdsAreRandom"
    effect    = "Allow"
    actions   = ["ecs:DescribeTasks", "ecs:StopTask"]
    resources = [local.cluster_tasks_arn]
  }

  # The webserver opens the run launcher too (to terminate runs), which resolves the run task
  # definition when it starts.
  statement {
    sid       = "DescribeTaskDefinitionHasNoResourceLevelPermission"
    effect    = "Allow"
    actions   = ["ecs:DescribeTaskDefinition"]
    resources = ["*"]
  }

  statement {
    sid       = "ListStepLogs"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.lake["processed"].arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.compute_logs_prefix}/*"]
    }
  }

  statement {
    sid       = "ReadStepLogsObjectsUnderThePrefix"
    effect    = "Allow"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.lake["processed"].arn}/${var.compute_logs_prefix}/*"]
  }
}

resource "aws_iam_role" "webserver" {
  count = local.ecs

  name                 = "${local.name}-dagster-webserver"
  description          = "Dagster webserver on ECS: shows step logs, stops run tasks. No lake data, no secrets."
  assume_role_policy   = data.aws_iam_policy_document.ecs_tasks_trust.json
  max_session_duration = 3600
}

resource "aws_iam_role_policy" "webserver" {
  count = local.ecs

  name   = "webserver"
  role   = aws_iam_role.webserver[0].id
  policy = data.aws_iam_policy_document.webserver.json
}
