# Inputs of the ECS Fargate deployment (ecs_*.tf, rds.tf). Off by default: the single-host path
# (deploy/compose.yaml) needs only the buckets, topic, logs, secrets and role of the other files.

variable "ecs_enabled" {
  description = "Create the ECS Fargate deployment (cluster, services, load balancer, run task definition, Dagster database)."
  type        = bool
  default     = false
}

variable "vpc_id" {
  description = "VPC of the ECS services, the internal load balancer and the Dagster database (required when ecs_enabled)."
  type        = string
  default     = ""
}

variable "private_subnet_ids" {
  description = "Private subnets (at least two availability zones) with a route to S3, ECR, Secrets Manager, CloudWatch Logs and the ECS API (a NAT gateway or VPC endpoints), and to the totesys and warehouse databases."
  type        = list(string)
  default     = []
}

variable "webserver_allowed_cidrs" {
  description = "Networks that may open the Dagster UI on the internal load balancer (e.g. the office VPN's range). The UI has no login: keep this narrow."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for cidr in var.webserver_allowed_cidrs : can(cidrhost(cidr, 0)) && cidr != "0.0.0.0/0"])
    error_message = "webserver_allowed_cidrs must be CIDR blocks, and not 0.0.0.0/0 (the UI has no login)."
  }
}

variable "webserver_certificate_arn" {
  description = "ACM certificate for HTTPS on the internal load balancer; empty = plain HTTP inside the VPC (reachable only from webserver_allowed_cidrs)."
  type        = string
  default     = ""
}

variable "image_tag" {
  description = "Tag of the platform image in the ECR repository that every service and run uses (CI passes the git commit; tags are immutable)."
  type        = string
  default     = ""

  validation {
    condition     = var.image_tag != "latest"
    error_message = "Use a unique, immutable tag (e.g. the git commit), never latest: the ECR repository refuses to overwrite tags."
  }
}

variable "service_sizes" {
  description = "Fargate CPU units and memory (MiB) of the always-on services. A valid Fargate pair each: 256 CPU takes 512-2048 MiB, 512 takes 1024-4096, 1024 takes 2048-8192."
  type = map(object({
    cpu    = number
    memory = number
  }))
  default = {
    webserver     = { cpu = 512, memory = 1024 }
    daemon        = { cpu = 256, memory = 1024 }
    code_location = { cpu = 512, memory = 2048 }
  }

  validation {
    condition     = alltrue([for name in ["webserver", "daemon", "code_location"] : contains(keys(var.service_sizes), name)])
    error_message = "service_sizes needs webserver, daemon and code_location."
  }
}

variable "run_default_size" {
  description = "Fargate CPU units and memory (MiB) of a run whose job sets no ecs/cpu and ecs/memory tags (ad-hoc materialisations from the UI)."
  type = object({
    cpu    = number
    memory = number
  })
  default = { cpu = 1024, memory = 4096 }
}

variable "run_ephemeral_storage_gib" {
  description = "Scratch disk of each run task in GiB (21-200; Fargate's first 20 GiB are free)."
  type        = number
  default     = 21

  validation {
    condition     = var.run_ephemeral_storage_gib >= 21 && var.run_ephemeral_storage_gib <= 200
    error_message = "run_ephemeral_storage_gib must be between 21 and 200."
  }
}

variable "pipeline_environment" {
  description = "Extra non-secret settings of the code location and of every run: ALERT_EMAIL_TO, ALERT_EMAIL_FROM, SMTP_HOST, SMTP_PORT, SMTP_USERNAME, SMTP_STARTTLS, DAGSTER_UI_URL, TOTESYS_AUTOMATION, CLOUDWATCH_LOG_LEVEL."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for name in keys(var.pipeline_environment) : !can(regex("PASSWORD|SECRET|_DB_URL|PG_URL|ACCESS_KEY", name))])
    error_message = "pipeline_environment is for non-secret settings; secrets come from Secrets Manager."
  }
}

variable "ecs_log_retention_days" {
  description = "Retention of the ECS container log group (webserver, daemon, code location and run task stdout)."
  type        = number
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.ecs_log_retention_days)
    error_message = "ecs_log_retention_days must be a retention CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, ...)."
  }
}

variable "ecr_keep_images" {
  description = "How many images the ECR repository keeps (older ones expire; a rollback needs the previous tags)."
  type        = number
  default     = 30
}

# --- Dagster's own database ------------------------------------------------------------------------

variable "dagster_pg_host" {
  description = "Host of an existing PostgreSQL server for Dagster's storage; empty = create an RDS PostgreSQL instance."
  type        = string
  default     = ""
}

variable "dagster_pg_port" {
  description = "Port of Dagster's PostgreSQL."
  type        = number
  default     = 5432
}

variable "dagster_pg_user" {
  description = "Login of Dagster's PostgreSQL (the RDS master user when Terraform creates the instance). Its password is the secret <prefix>/<env>/dagster-pg-password."
  type        = string
  default     = "dagster"
}

variable "dagster_pg_db" {
  description = "Database that holds Dagster's runs, event logs and schedules."
  type        = string
  default     = "dagster"
}

variable "dagster_db_credential_version" {
  description = "Raise by one after putting a new value in the dagster-pg-password secret, so Terraform sets it on the RDS instance (the value itself never enters state)."
  type        = number
  default     = 1
}

variable "rds_instance_class" {
  description = "Instance class of the Dagster RDS database (run history and schedules only: small)."
  type        = string
  default     = "db.t4g.micro"
}

variable "rds_allocated_storage_gib" {
  description = "Initial storage of the Dagster RDS database; it grows automatically up to 5x."
  type        = number
  default     = 20
}

variable "rds_engine_version" {
  description = "PostgreSQL major version of the Dagster RDS database."
  type        = string
  default     = "17"
}

variable "rds_multi_az" {
  description = "Standby in a second availability zone (doubles the database cost; the run history is not business data)."
  type        = bool
  default     = false
}

variable "rds_backup_retention_days" {
  description = "Days of automated backups of the Dagster RDS database."
  type        = number
  default     = 7
}

variable "rds_deletion_protection" {
  description = "Refuse to delete the Dagster RDS database (set false before a deliberate terraform destroy)."
  type        = bool
  default     = true
}
