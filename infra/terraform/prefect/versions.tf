# Prefect objects on the self-hosted server that infra/terraform/aws runs. A separate root
# module: it needs the PrefectHQ/prefect provider and a reachable Prefect API, so it is
# applied after the AWS module (see ../README.md).
terraform {
  required_version = ">= 1.11"

  required_providers {
    prefect = {
      source  = "PrefectHQ/prefect"
      version = "~> 2.0"
    }
  }
}

provider "prefect" {
  endpoint       = var.prefect_endpoint
  basic_auth_key = var.prefect_basic_auth_key
}
