# The secrets the pipeline reads. Terraform creates empty secrets only; put the values with
#   aws secretsmanager put-secret-value --secret-id <name> --secret-string file://value.txt
# so they never appear in Terraform state or plans (docs/deployment.md).

resource "aws_secretsmanager_secret" "pipeline" {
  for_each = local.secrets

  name                    = "${var.name_prefix}/${var.environment}/${each.key}"
  description             = "totesys-platform: value of ${each.value}"
  recovery_window_in_days = var.secret_recovery_window_days

  tags = {
    EnvironmentVariable = each.value
  }
}
