# Failure alerts (ALERT_SNS_TOPIC_ARN), optionally forwarded to one e-mail address.

resource "aws_sns_topic" "alerts" {
  name = "${local.name}-alerts"
  # The AWS-managed key: encrypted at rest, and publishers need no kms:* permission of their own.
  kms_master_key_id = "alias/aws/sns"
}

resource "aws_sns_topic_subscription" "alert_email" {
  count = var.alert_email == "" ? 0 : 1

  topic_arn = aws_sns_topic.alerts.arn
  protocol  = "email"
  endpoint  = var.alert_email
}
