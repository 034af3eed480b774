data "aws_caller_identity" "current" {}

locals {
  name       = "${var.name_prefix}-${var.environment}"
  account_id = data.aws_caller_identity.current.account_id

  bucket_names = {
    ingestion = coalesce(var.ingestion_bucket_name, "${local.name}-ingestion-${local.account_id}")
    processed = coalesce(var.processed_bucket_name, "${local.name}-processed-${local.account_id}")
  }

  # Secrets Manager secret (name suffix) -> the environment variable it fills. Values are set
  # outside Terraform (docs/deployment.md), so they never enter the state file.
  secrets = {
    "totesys-db-url"      = "TOTESYS_DB_URL"
    "warehouse-db-url"    = "WAREHOUSE_DB_URL"
    "dagster-pg-url"      = "DAGSTER_PG_URL"
    "dagster-pg-password" = "DAGSTER_PG_PASSWORD"
    "smtp-password"       = "SMTP_PASSWORD"
  }
}
