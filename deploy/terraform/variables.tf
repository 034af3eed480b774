variable "aws_region" {
  description = "Region of every resource (the lake buckets, the alert topic, the log group, the secrets)."
  type        = string
  default     = "eu-west-2"
}

variable "name_prefix" {
  description = "Prefix of every resource name."
  type        = string
  default     = "totesys"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name_prefix))
    error_message = "name_prefix must be 2-21 lowercase letters, digits or hyphens, starting with a letter (it becomes part of bucket names)."
  }
}

variable "environment" {
  description = "Deployment name, e.g. prod or staging."
  type        = string
  default     = "prod"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,15}$", var.environment))
    error_message = "environment must be 2-16 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "ingestion_bucket_name" {
  description = "Name of the ingestion-zone bucket; null = <prefix>-<environment>-ingestion-<account id>."
  type        = string
  default     = null
}

variable "processed_bucket_name" {
  description = "Name of the processed-zone bucket; null = <prefix>-<environment>-processed-<account id>."
  type        = string
  default     = null
}

variable "lake_prefix" {
  description = "Key prefix of the lake inside each bucket (LAKE_INGESTION_URL = s3://<bucket>/<lake_prefix>)."
  type        = string
  default     = "lake"
}

variable "compute_logs_prefix" {
  description = "Key prefix, in the processed bucket, of Dagster's step logs (DAGSTER_COMPUTE_LOG_PREFIX)."
  type        = string
  default     = "dagster/compute-logs"
}

variable "compute_logs_retention_days" {
  description = "Days after which Dagster step logs are deleted."
  type        = number
  default     = 30
}

variable "noncurrent_version_retention_days" {
  description = "Days a deleted or overwritten lake object stays recoverable (the buckets are versioned)."
  type        = number
  default     = 90

  validation {
    condition     = var.noncurrent_version_retention_days >= 1
    error_message = "noncurrent_version_retention_days must be at least 1."
  }
}

variable "ingestion_infrequent_access_after_days" {
  description = "Days after which ingestion-zone objects move to STANDARD_IA (read again only on a rebuild); 0 = never."
  type        = number
  default     = 90

  validation {
    condition     = var.ingestion_infrequent_access_after_days == 0 || var.ingestion_infrequent_access_after_days >= 30
    error_message = "S3 moves objects to STANDARD_IA no sooner than 30 days after creation: use 0 (never) or at least 30."
  }
}

variable "force_destroy_buckets" {
  description = "Let `terraform destroy` delete non-empty lake buckets. Keep false in production."
  type        = bool
  default     = false
}

variable "alert_email" {
  description = "E-mail address subscribed to the alert topic (confirm the subscription e-mail); empty = none."
  type        = string
  default     = ""
}

variable "log_retention_days" {
  description = "Retention of the pipeline's CloudWatch log group."
  type        = number
  default     = 90

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, ...)."
  }
}

variable "log_stream_name" {
  description = "The one log stream the pipeline may write to (CLOUDWATCH_LOG_STREAM)."
  type        = string
  default     = "totesys-platform"
}

variable "secret_recovery_window_days" {
  description = "Days a deleted secret can be restored (0 = delete at once)."
  type        = number
  default     = 7
}

variable "pipeline_trusted_services" {
  description = "AWS services that may assume the pipeline role: EC2 for the single host, ECS tasks for EcsRunLauncher."
  type        = list(string)
  default     = ["ec2.amazonaws.com", "ecs-tasks.amazonaws.com"]
}

variable "tags" {
  description = "Extra tags for every resource."
  type        = map(string)
  default     = {}
}
