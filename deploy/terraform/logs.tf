# Run logs shipped by the pipeline (CLOUDWATCH_LOG_GROUP / CLOUDWATCH_LOG_STREAM). The stream is
# created here, so the pipeline role only needs logs:PutLogEvents on this one stream.

resource "aws_cloudwatch_log_group" "pipeline" {
  #checkov:skip=CKV_AWS_158:Encrypted at rest by CloudWatch Logs' own key; a customer-managed KMS key would need kms:* for the pipeline role, which holds no KMS permission by design (iam.tf).
  #checkov:skip=CKV_AWS_338:Run logs are operational; the retention is a choice (var.log_retention_days), and run history stays in Dagster's database.
  name              = "/${var.name_prefix}/${var.environment}/pipeline"
  retention_in_days = var.log_retention_days
}

resource "aws_cloudwatch_log_stream" "pipeline" {
  name           = var.log_stream_name
  log_group_name = aws_cloudwatch_log_group.pipeline.name
}
