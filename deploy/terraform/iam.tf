# The pipeline role, shared by every container of the deployment (code server, run workers,
# webserver, daemon). Least privilege: no wildcard action, and no wildcard resource beyond the
# objects of the two lake buckets. deploy/iam/pipeline-policy.json is the same policy as plain JSON.
#
# Deliberately absent: s3:DeleteObjectVersion and s3:PutLifecycleConfiguration (the role can
# remove an object only by adding a delete marker, which versioning keeps recoverable), any
# bucket-level write, kms:*, logs:CreateLogGroup/CreateLogStream (both created above),
# secretsmanager:ListSecrets and every write to a secret.

data "aws_iam_policy_document" "pipeline_trust" {
  statement {
    sid     = "TrustedServices"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = var.pipeline_trusted_services
    }
  }
}

data "aws_iam_policy_document" "pipeline" {
  statement {
    sid     = "ListLakeBuckets"
    effect  = "Allow"
    actions = ["s3:ListBucket"]
    resources = [
      aws_s3_bucket.lake["ingestion"].arn,
      aws_s3_bucket.lake["processed"].arn,
    ]
  }

  statement {
    sid    = "ReadWriteLakeObjects"
    effect = "Allow"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
    ]
    resources = [
      "${aws_s3_bucket.lake["ingestion"].arn}/*",
      "${aws_s3_bucket.lake["processed"].arn}/*",
    ]
  }

  statement {
    sid       = "PublishAlerts"
    effect    = "Allow"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alerts.arn]
  }

  statement {
    sid       = "ShipRunLogs"
    effect    = "Allow"
    actions   = ["logs:PutLogEvents"]
    resources = [aws_cloudwatch_log_stream.pipeline.arn]
  }

  statement {
    sid       = "ReadOwnSecrets"
    effect    = "Allow"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [for secret in aws_secretsmanager_secret.pipeline : secret.arn]
  }
}

resource "aws_iam_role" "pipeline" {
  name                 = "${local.name}-pipeline"
  description          = "totesys-platform pipeline: lake buckets, alert topic, run log stream, own secrets."
  assume_role_policy   = data.aws_iam_policy_document.pipeline_trust.json
  max_session_duration = 3600
}

resource "aws_iam_policy" "pipeline" {
  name        = "${local.name}-pipeline"
  description = "Least-privilege access of the totesys-platform pipeline."
  policy      = data.aws_iam_policy_document.pipeline.json
}

resource "aws_iam_role_policy_attachment" "pipeline" {
  role       = aws_iam_role.pipeline.name
  policy_arn = aws_iam_policy.pipeline.arn
}

# For the single-host deployment: attach to the EC2 instance that runs deploy/compose.yaml.
resource "aws_iam_instance_profile" "pipeline" {
  name = "${local.name}-pipeline"
  role = aws_iam_role.pipeline.name
}
