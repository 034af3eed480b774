terraform {
  # 1.11: write-only arguments (rds.tf passes the database password without storing it in state).
  required_version = ">= 1.11.0, < 2.0.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
  }

  # State holds resource ids, not secret values (secret values are set outside Terraform), but keep
  # it in a versioned, encrypted backend all the same, e.g.:
  # backend "s3" {
  #   bucket       = "my-terraform-state"
  #   key          = "totesys-platform/prod.tfstate"
  #   region       = "eu-west-2"
  #   use_lockfile = true
  # }
}

provider "aws" {
  region = var.aws_region

  default_tags {
    tags = merge(var.tags, {
      Project     = "totesys-platform"
      Environment = var.environment
      ManagedBy   = "terraform"
    })
  }
}
