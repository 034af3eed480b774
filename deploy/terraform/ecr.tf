# The registry the platform image is pushed to (.github/workflows/deploy.yaml). Created even without
# ECS: an empty repository costs nothing, and the single host can pull the same image.

resource "aws_ecr_repository" "platform" {
  name = "${local.name}-platform"
  # Immutable tags: a tag names one build for ever, so a task definition always runs what was tested.
  image_tag_mutability = "IMMUTABLE"
  force_delete         = false

  image_scanning_configuration {
    scan_on_push = true
  }

  # KMS with the AWS-managed key (aws/ecr): encrypted at rest, no key of our own to pay for or manage.
  encryption_configuration {
    encryption_type = "KMS"
  }
}

resource "aws_ecr_lifecycle_policy" "platform" {
  repository = aws_ecr_repository.platform.name

  # Storage is the only cost of the registry: keep the last N images (enough to roll back).
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "Keep the last ${var.ecr_keep_images} images"
      selection = {
        tagStatus   = "any"
        countType   = "imageCountMoreThan"
        countNumber = var.ecr_keep_images
      }
      action = { type = "expire" }
    }]
  })
}
