output "ingestion_bucket" {
  description = "Ingestion-zone bucket name."
  value       = aws_s3_bucket.lake["ingestion"].id
}

output "processed_bucket" {
  description = "Processed-zone bucket name (also holds Dagster's step logs)."
  value       = aws_s3_bucket.lake["processed"].id
}

output "lake_ingestion_url" {
  description = "LAKE_INGESTION_URL"
  value       = "s3://${aws_s3_bucket.lake["ingestion"].id}/${var.lake_prefix}"
}

output "lake_processed_url" {
  description = "LAKE_PROCESSED_URL"
  value       = "s3://${aws_s3_bucket.lake["processed"].id}/${var.lake_prefix}"
}

output "compute_log_bucket" {
  description = "DAGSTER_COMPUTE_LOG_BUCKET"
  value       = aws_s3_bucket.lake["processed"].id
}

output "compute_log_prefix" {
  description = "DAGSTER_COMPUTE_LOG_PREFIX"
  value       = var.compute_logs_prefix
}

output "alert_topic_arn" {
  description = "ALERT_SNS_TOPIC_ARN"
  value       = aws_sns_topic.alerts.arn
}

output "log_group_name" {
  description = "CLOUDWATCH_LOG_GROUP"
  value       = aws_cloudwatch_log_group.pipeline.name
}

output "log_stream_name" {
  description = "CLOUDWATCH_LOG_STREAM"
  value       = aws_cloudwatch_log_stream.pipeline.name
}

output "secret_arns" {
  description = "Secrets Manager secret per environment variable (set their values outside Terraform)."
  value       = { for key, variable in local.secrets : variable => aws_secretsmanager_secret.pipeline[key].arn }
}

output "pipeline_role_arn" {
  description = "IAM role of the pipeline (ECS task role, or assumed through the instance profile)."
  value       = aws_iam_role.pipeline.arn
}

output "pipeline_instance_profile" {
  description = "Instance profile to attach to the single-host EC2 instance."
  value       = aws_iam_instance_profile.pipeline.name
}

output "pipeline_policy_json" {
  description = "The pipeline's IAM policy as rendered for this account."
  value       = data.aws_iam_policy_document.pipeline.json
}

output "dotenv" {
  description = "The non-secret lines of deploy/.env for these resources."
  value       = <<-EOT
    AWS_REGION=${var.aws_region}
    LAKE_INGESTION_URL=s3://${aws_s3_bucket.lake["ingestion"].id}/${var.lake_prefix}
    LAKE_PROCESSED_URL=s3://${aws_s3_bucket.lake["processed"].id}/${var.lake_prefix}
    DAGSTER_COMPUTE_LOG_BUCKET=${aws_s3_bucket.lake["processed"].id}
    DAGSTER_COMPUTE_LOG_PREFIX=${var.compute_logs_prefix}
    ALERT_SNS_TOPIC_ARN=${aws_sns_topic.alerts.arn}
    CLOUDWATCH_LOG_GROUP=${aws_cloudwatch_log_group.pipeline.name}
    CLOUDWATCH_LOG_STREAM=${aws_cloudwatch_log_stream.pipeline.name}
  EOT
}
