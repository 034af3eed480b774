# The secrets the pipeline reads. Terraform creates empty secrets only; put the values with
#   aws secretsmanager put-secret-value --secret-id <name> --secret-string file://value.txt
# so they never appear in Terraform state or plans (docs/deployment.md).

resource "aws_secretsmanager_secret" "pipeline" {
  #checkov:skip=CKV_AWS_149:Encrypted with the AWS-managed key (aws/secretsmanager); a customer-managed key would add kms:Decrypt grants to every role that reads a secret, for no gain in who can read it (IAM already limits that to exact secret ARNs).
  #checkov:skip=CKV2_AWS_57:The values are database URLs and an SMTP password owned by other systems' administrators; automatic rotation needs a rotation Lambda per database. Rotation is manual (docs/deployment.md, Operate).
  for_each = local.secrets

  name                    = "${var.name_prefix}/${var.environment}/${each.key}"
  description             = "totesys-platform: value of ${each.value}"
  recovery_window_in_days = var.secret_recovery_window_days

  tags = {
    EnvironmentVariable = each.value
  }
}
