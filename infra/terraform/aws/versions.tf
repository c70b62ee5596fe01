terraform {
  # 1.11: write-only arguments and ephemeral resources keep the secrets out of the state.
  required_version = ">= 1.11"

  # Remote state (README, "State"): keep it in S3 with S3-native locking. Fill in and
  # uncomment, then `terraform init -migrate-state`. The tests run `init -backend=false`.
  # backend "s3" {
  #   bucket       = "my-terraform-state"  # versioned, encrypted, public access blocked
  #   key          = "encore/aws.tfstate"
  #   region       = "eu-west-1"
  #   encrypt      = true
  #   use_lockfile = true                  # a lock object next to the state; no DynamoDB table
  # }

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = merge({ Project = var.name }, var.tags)
  }
}

# The same account and region, for the ephemeral password generators only: the offline tests
# mock the default provider, and a mocked provider cannot open ephemeral resources.
provider "aws" {
  alias  = "secrets"
  region = var.region
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
