output "ecr_repository_url" {
  description = "Where CI pushes the platform image (docker push <url>:<git commit>)."
  value       = aws_ecr_repository.platform.repository_url
}

output "ecs_cluster_name" {
  description = "ECS cluster of the Dagster services and run tasks (empty without ecs_enabled)."
  value       = one(aws_ecs_cluster.dagster[*].name)
}

output "dagster_ui_url" {
  description = "The Dagster UI on the internal load balancer (reachable from webserver_allowed_cidrs only); set DAGSTER_UI_URL in pipeline_environment to it or to your DNS name for it."
  value       = var.ecs_enabled ? "${var.webserver_certificate_arn == "" ? "http" : "https"}://${one(aws_lb.webserver[*].dns_name)}" : null
}

output "run_task_definition_family" {
  description = "Task definition family every run starts from (EcsRunLauncher)."
  value       = var.ecs_enabled ? local.run_task_family : null
}

output "dagster_pg_host" {
  description = "Host of Dagster's PostgreSQL (the RDS instance, or var.dagster_pg_host)."
  value       = var.ecs_enabled ? local.dagster_pg_host : null
}
