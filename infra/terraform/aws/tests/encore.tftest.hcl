# Offline checks of the values that matter, with a mocked AWS provider:
#   terraform init -backend=false && terraform test

mock_provider "aws" {
  mock_data "aws_availability_zones" {
    defaults = {
      names = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
    }
  }

  mock_data "aws_caller_identity" {
    defaults = {
      account_id = "123456789012"
    }
  }

  mock_data "aws_partition" {
    defaults = {
      partition = "aws"
    }
  }

  # The provider still validates ARNs, so the mocked ones must look like ARNs.
  mock_resource "aws_iam_role" {
    defaults = {
      arn = "arn:aws:iam::123456789012:role/mock"
    }
  }

  mock_resource "aws_iam_instance_profile" {
    defaults = {
      arn = "arn:aws:iam::123456789012:instance-profile/mock"
    }
  }

  mock_resource "aws_ecr_repository" {
    defaults = {
      repository_url = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/mock"
    }
  }

  mock_resource "aws_service_discovery_service" {
    defaults = {
      arn = "arn:aws:servicediscovery:eu-west-1:123456789012:service/srv-mock"
    }
  }

  mock_resource "aws_launch_template" {
    defaults = {
      id = "lt-0123456789abcdef0"
    }
  }

  mock_resource "aws_autoscaling_group" {
    defaults = {
      arn = "arn:aws:autoscaling:eu-west-1:123456789012:autoScalingGroup:mock:autoScalingGroupName/encore-gpu"
    }
  }

  mock_data "aws_ssm_parameter" {
    defaults = {
      insecure_value = "ami-0123456789abcdef0"
    }
  }
}

variables {
  region = "eu-west-1"
}

run "defaults" {
  command = apply

  # --- S3 ---
  assert {
    condition     = aws_s3_bucket.files.bucket == "encore-files-123456789012"
    error_message = "the bucket is named <name>-files-<account id>"
  }

  assert {
    condition = alltrue([
      aws_s3_bucket_public_access_block.files.block_public_acls,
      aws_s3_bucket_public_access_block.files.block_public_policy,
      aws_s3_bucket_public_access_block.files.ignore_public_acls,
      aws_s3_bucket_public_access_block.files.restrict_public_buckets,
    ])
    error_message = "all public access to the bucket must be blocked"
  }

  assert {
    condition     = one([for r in aws_s3_bucket_server_side_encryption_configuration.files.rule : one(r.apply_server_side_encryption_by_default).sse_algorithm]) == "AES256"
    error_message = "the bucket must be encrypted"
  }

  assert {
    condition     = one(aws_s3_bucket_versioning.files.versioning_configuration).status == "Disabled"
    error_message = "versioning stays off"
  }

  assert {
    condition = length([
      for r in aws_s3_bucket_lifecycle_configuration.files.rule : r
      if r.status == "Enabled" && one(r.filter).prefix == "files/tmp/" && try(one(r.expiration).days, 0) == 7
    ]) == 1
    error_message = "one enabled lifecycle rule expires files/tmp/ after 7 days"
  }

  assert {
    condition = alltrue([
      for r in aws_s3_bucket_lifecycle_configuration.files.rule :
      startswith(one(r.filter).prefix, "files/") && length(r.expiration) + length(r.abort_incomplete_multipart_upload) == 1
    ])
    error_message = "lifecycle rules touch only the files/ prefix; only tmp/ expires"
  }

  assert {
    condition     = output.storage_url == "s3://encore-files-123456789012/files"
    error_message = "ENCORE_STORAGE_URL is s3://bucket/files"
  }

  # --- RDS ---
  assert {
    condition     = aws_db_instance.main.publicly_accessible == false && aws_db_instance.main.storage_encrypted
    error_message = "the database is private and encrypted"
  }

  assert {
    condition     = aws_db_instance.main.engine == "postgres" && startswith(aws_db_instance.main.engine_version, "15")
    error_message = "PostgreSQL 15"
  }

  assert {
    condition     = can(regex("^postgresql\\+psycopg://encore:[0-9a-f]{32}@.+/encore$", aws_secretsmanager_secret_version.database_url.secret_string))
    error_message = "ENCORE_DATABASE_URL is a psycopg URL to the encore database with a 32-hex password"
  }

  assert {
    condition     = aws_db_instance.main.password == regex("encore:([0-9a-f]{32})@", aws_secretsmanager_secret_version.prefect_database_url.secret_string)[0]
    error_message = "the secrets hold the instance's password"
  }

  # --- GPU capacity ---
  assert {
    condition     = aws_autoscaling_group.gpu.min_size == 0 && aws_autoscaling_group.gpu.desired_capacity == 0
    error_message = "the GPU group scales to zero"
  }

  assert {
    condition     = aws_autoscaling_group.gpu.max_size == 1 && aws_launch_template.gpu.instance_type == "g5.xlarge"
    error_message = "by default at most one g5.xlarge"
  }

  assert {
    condition     = aws_launch_template.gpu.image_id == "ami-0123456789abcdef0"
    error_message = "the AMI comes from the SSM parameter"
  }

  assert {
    condition     = one(one(aws_ecs_capacity_provider.gpu.auto_scaling_group_provider).managed_scaling).status == "ENABLED"
    error_message = "the GPU capacity provider uses managed scaling"
  }

  assert {
    condition     = contains(aws_ecs_cluster_capacity_providers.main.capacity_providers, aws_ecs_capacity_provider.gpu.name)
    error_message = "the GPU capacity provider belongs to the cluster"
  }

  assert {
    condition     = jsondecode(aws_ecs_task_definition.gpu.container_definitions)[0].resourceRequirements == [{ type = "GPU", value = "1" }]
    error_message = "the GPU task definition requests one GPU"
  }

  assert {
    condition     = startswith(jsondecode(aws_ecs_task_definition.gpu.container_definitions)[0].image, aws_ecr_repository.gpu.repository_url)
    error_message = "GPU tasks run the gpu image"
  }

  assert {
    condition     = aws_ecs_task_definition.gpu.requires_compatibilities == toset(["EC2"])
    error_message = "GPU tasks run on EC2 (Fargate has no GPUs)"
  }

  # --- services ---
  assert {
    condition     = jsondecode(aws_ecs_task_definition.prefect_server.container_definitions)[0].command[2] == "python -c \"$CREATE_ENCORE_DB\" && exec prefect server start --host 0.0.0.0 --port 4200"
    error_message = "the server runs prefect server start --host 0.0.0.0"
  }

  assert {
    condition = (
      contains([for e in jsondecode(aws_ecs_task_definition.prefect_server.container_definitions)[0].secrets : e.name], "PREFECT_API_DATABASE_CONNECTION_URL")
      && contains([for e in jsondecode(aws_ecs_task_definition.prefect_server.container_definitions)[0].environment : "${e.name}=${e.value}"], "DO_NOT_TRACK=1")
      && contains([for e in jsondecode(aws_ecs_task_definition.prefect_server.container_definitions)[0].environment : "${e.name}=${e.value}"], "PREFECT_SERVER_ANALYTICS_ENABLED=false")
    )
    error_message = "the server uses RDS and sends no telemetry"
  }

  assert {
    condition     = toset(keys(aws_ecs_service.app)) == toset(["cpu-worker", "gpu-worker", "bot-telegram", "bot-discord"])
    error_message = "workers and both bots run as services"
  }

  assert {
    condition     = strcontains(jsondecode(aws_ecs_task_definition.app["gpu-worker"].container_definitions)[0].command[2], "prefect worker start --pool encore-gpu --type ecs")
    error_message = "the GPU pool has an ECS worker"
  }

  assert {
    condition     = strcontains(jsondecode(aws_ecs_task_definition.app["cpu-worker"].container_definitions)[0].command[2], "prefect worker start --pool encore-cpu --type process")
    error_message = "the CPU pool has a process worker"
  }

  assert {
    condition     = jsondecode(aws_ecs_task_definition.app["bot-telegram"].container_definitions)[0].command == ["encore", "bot", "telegram"]
    error_message = "the Telegram bot runs encore bot telegram"
  }

  assert {
    condition = alltrue([for k, td in aws_ecs_task_definition.app : alltrue([
      contains([for e in jsondecode(td.container_definitions)[0].environment : "${e.name}=${e.value}"], "ENCORE_RUN_MODE=cluster"),
      contains([for e in jsondecode(td.container_definitions)[0].environment : "${e.name}=${e.value}"], "ENCORE_STORAGE_URL=s3://encore-files-123456789012/files"),
      contains([for e in jsondecode(td.container_definitions)[0].environment : "${e.name}=${e.value}"], "PREFECT_API_URL=http://prefect-server.encore.internal:4200/api"),
      contains([for e in jsondecode(td.container_definitions)[0].secrets : e.name], "ENCORE_DATABASE_URL"),
      contains([for e in jsondecode(td.container_definitions)[0].secrets : e.name], "ENCORE_TELEGRAM_TOKEN"),
    ])])
    error_message = "every Encore container runs in cluster mode on S3, the server and the database"
  }

  assert {
    condition     = aws_service_discovery_service.prefect_server.name == "prefect-server" && aws_service_discovery_private_dns_namespace.main.name == "encore.internal"
    error_message = "the Prefect API has a Cloud Map name"
  }

  assert {
    condition     = alltrue([for s in aws_ecs_service.app : one(s.network_configuration).assign_public_ip == false])
    error_message = "tasks have no public address"
  }
}

run "one_bot_own_vpc" {
  command = plan

  variables {
    discord_enabled    = false
    vpc_id             = "vpc-0abc"
    private_subnet_ids = ["subnet-a", "subnet-b"]
    gpu_count          = 3
  }

  assert {
    condition     = toset(keys(aws_ecs_service.app)) == toset(["cpu-worker", "gpu-worker", "bot-telegram"])
    error_message = "a disabled bot gets no service"
  }

  assert {
    condition     = length(aws_secretsmanager_secret.discord_token) == 0
    error_message = "a disabled bot gets no secret"
  }

  assert {
    condition     = length(aws_vpc.main) == 0 && length(aws_nat_gateway.main) == 0
    error_message = "a given VPC is used as is"
  }

  assert {
    condition     = aws_autoscaling_group.gpu.max_size == 3 && aws_autoscaling_group.gpu.min_size == 0
    error_message = "gpu_count bounds the GPU group"
  }
}
