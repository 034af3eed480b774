# Dagster's own storage (runs, event logs, schedules, sensor cursors) on RDS PostgreSQL, unless
# var.dagster_pg_host names an existing server. It holds run history, not business data: small,
# single-AZ by default, encrypted, private, TLS only.
#
# The master password is the value of the secret <prefix>/<env>/dagster-pg-password, read through an
# ephemeral resource into a write-only argument: it is never written to the plan or the state.
# Put the value before the first apply that creates the instance (docs/deployment.md).

locals {
  create_rds = var.ecs_enabled && var.dagster_pg_host == "" ? 1 : 0
}

resource "aws_security_group" "dagster_db" {
  count = local.create_rds

  name        = "${local.name}-dagster-db"
  description = "Dagster's PostgreSQL: reachable from the Dagster services and run tasks only."
  vpc_id      = var.vpc_id

  ingress {
    description = "PostgreSQL from the webserver, the daemon and runs, and the code location"
    from_port   = var.dagster_pg_port
    to_port     = var.dagster_pg_port
    protocol    = "tcp"
    security_groups = [
      aws_security_group.webserver[0].id,
      aws_security_group.runs[0].id,
      aws_security_group.code_location[0].id,
    ]
  }
}

resource "aws_db_subnet_group" "dagster" {
  count = local.create_rds

  name        = "${local.name}-dagster"
  description = "Private subnets of Dagster's PostgreSQL."
  subnet_ids  = var.private_subnet_ids
}

resource "aws_db_parameter_group" "dagster" {
  count = local.create_rds

  name        = "${local.name}-dagster-pg${var.rds_engine_version}"
  family      = "postgres${var.rds_engine_version}"
  description = "Dagster storage: TLS only, slow statements and connections logged."

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }

  parameter {
    name  = "log_min_duration_statement"
    value = "2000"
  }

  parameter {
    name  = "log_connections"
    value = "1"
  }
}

ephemeral "aws_secretsmanager_secret_version" "dagster_pg_password" {
  count = local.create_rds

  secret_id = aws_secretsmanager_secret.pipeline["dagster-pg-password"].id
}

resource "aws_db_instance" "dagster" {
  #checkov:skip=CKV_AWS_157:Single-AZ by default: the database holds Dagster's run history, which the pipeline does not need to load data; set rds_multi_az = true to trade double cost for failover.
  #checkov:skip=CKV_AWS_161:dagster-postgres connects with a password (from Secrets Manager); it has no IAM token authentication.
  #checkov:skip=CKV_AWS_118:No enhanced monitoring: it needs a monitoring role and bills per instance; CloudWatch's basic RDS metrics and the PostgreSQL log exports remain.
  #checkov:skip=CKV_AWS_353:Performance Insights is not offered for the default db.t4g.micro class; enable it when choosing a larger class.
  #checkov:skip=CKV_AWS_354:Follows from CKV_AWS_353: Performance Insights is off.
  #checkov:skip=CKV2_AWS_30:Query logging: log_min_duration_statement logs slow statements; logging every statement would log the sensor's 15-second polling for nothing.
  count = local.create_rds

  identifier     = "${local.name}-dagster"
  engine         = "postgres"
  engine_version = var.rds_engine_version
  instance_class = var.rds_instance_class

  db_name             = var.dagster_pg_db
  username            = var.dagster_pg_user
  password_wo         = ephemeral.aws_secretsmanager_secret_version.dagster_pg_password[0].secret_string
  password_wo_version = var.dagster_db_credential_version
  port                = var.dagster_pg_port

  allocated_storage     = var.rds_allocated_storage_gib
  max_allocated_storage = var.rds_allocated_storage_gib * 5
  storage_type          = "gp3"
  storage_encrypted     = true

  db_subnet_group_name   = aws_db_subnet_group.dagster[0].name
  vpc_security_group_ids = [aws_security_group.dagster_db[0].id]
  parameter_group_name   = aws_db_parameter_group.dagster[0].name
  publicly_accessible    = false
  multi_az               = var.rds_multi_az

  backup_retention_period         = var.rds_backup_retention_days
  copy_tags_to_snapshot           = true
  deletion_protection             = var.rds_deletion_protection
  skip_final_snapshot             = false
  final_snapshot_identifier       = "${local.name}-dagster-final"
  auto_minor_version_upgrade      = true
  enabled_cloudwatch_logs_exports = ["postgresql", "upgrade"]
}
