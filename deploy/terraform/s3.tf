# The data lake: one bucket per zone. Versioned (a delete or overwrite stays recoverable for
# var.noncurrent_version_retention_days), encrypted, private, TLS only, owner-enforced.

resource "aws_s3_bucket" "lake" {
  #checkov:skip=CKV_AWS_18:No server access logs: they need a third bucket to secure; CloudTrail data events can audit object access when required.
  #checkov:skip=CKV_AWS_144:No cross-region replication: the lake is rebuilt from totesys if the region is lost, and replication doubles storage cost.
  #checkov:skip=CKV_AWS_145:SSE-S3 (AES256) on purpose: encryption at rest without a KMS key, so the pipeline role needs no kms:* permission (iam.tf).
  #checkov:skip=CKV2_AWS_62:No event notifications: nothing consumes bucket events; the pipeline is driven by Dagster's schedule and sensor.
  #checkov:skip=CKV2_AWS_61:False positive: both buckets have a lifecycle configuration (aws_s3_bucket_lifecycle_configuration.ingestion and .processed), which checkov does not match through for_each.
  for_each = local.bucket_names

  bucket        = each.value
  force_destroy = var.force_destroy_buckets

  tags = {
    Zone = each.key
  }
}

resource "aws_s3_bucket_ownership_controls" "lake" {
  for_each = aws_s3_bucket.lake

  bucket = each.value.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "lake" {
  for_each = aws_s3_bucket.lake

  bucket                  = each.value.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "lake" {
  for_each = aws_s3_bucket.lake

  bucket = each.value.id
  versioning_configuration {
    status = "Enabled"
  }
}

# SSE-S3: encryption at rest without a KMS key, so the pipeline role needs no kms:* permission.
resource "aws_s3_bucket_server_side_encryption_configuration" "lake" {
  for_each = aws_s3_bucket.lake

  bucket = each.value.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

data "aws_iam_policy_document" "lake_bucket" {
  for_each = aws_s3_bucket.lake

  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      each.value.arn,
      "${each.value.arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  # A committed Delta log entry is never overwritten: a PUT of a commit file must be put-if-absent
  # (If-None-Match: *), as delta-rs's commits are. Checkpoints and _last_checkpoint are not .json files.
  statement {
    sid       = "DenyOverwritingDeltaCommits"
    effect    = "Deny"
    actions   = ["s3:PutObject"]
    resources = ["${each.value.arn}/*/_delta_log/*.json"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Null"
      variable = "s3:if-none-match"
      values   = ["true"]
    }
  }
}

resource "aws_s3_bucket_policy" "lake" {
  for_each = aws_s3_bucket.lake

  bucket = each.value.id
  policy = data.aws_iam_policy_document.lake_bucket[each.key].json

  depends_on = [aws_s3_bucket_public_access_block.lake]
}

resource "aws_s3_bucket_lifecycle_configuration" "ingestion" {
  #checkov:skip=CKV_AWS_300:The lake-housekeeping rule aborts incomplete uploads for the whole bucket; the infrequent-access rule only moves storage class.
  bucket = aws_s3_bucket.lake["ingestion"].id

  rule {
    id     = "lake-housekeeping"
    status = "Enabled"

    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_retention_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }

    expiration {
      expired_object_delete_marker = true
    }
  }

  # Raw batches are read again only by a rebuild: cheaper storage once they are old.
  dynamic "rule" {
    for_each = var.ingestion_infrequent_access_after_days > 0 ? [var.ingestion_infrequent_access_after_days] : []

    content {
      id     = "ingestion-infrequent-access"
      status = "Enabled"

      filter {
        prefix = "${var.lake_prefix}/"
      }

      transition {
        days          = rule.value
        storage_class = "STANDARD_IA"
      }
    }
  }

  depends_on = [aws_s3_bucket_versioning.lake]
}

resource "aws_s3_bucket_lifecycle_configuration" "processed" {
  bucket = aws_s3_bucket.lake["processed"].id

  rule {
    id     = "lake-housekeeping"
    status = "Enabled"

    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_retention_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }

    expiration {
      expired_object_delete_marker = true
    }
  }

  # Dagster step logs (S3ComputeLogManager) are operational data, not lake data: they expire.
  rule {
    id     = "dagster-compute-logs"
    status = "Enabled"

    filter {
      prefix = "${var.compute_logs_prefix}/"
    }

    expiration {
      days = var.compute_logs_retention_days
    }

    noncurrent_version_expiration {
      noncurrent_days = 1
    }
  }

  depends_on = [aws_s3_bucket_versioning.lake]
}
