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

  mock_resource "aws_ecs_cluster" {
    defaults = {
      arn = "arn:aws:ecs:eu-west-1:123456789012:cluster/encore"
    }
  }

  mock_resource "aws_sqs_queue" {
    defaults = {
      arn = "arn:aws:sqs:eu-west-1:123456789012:mock"
    }
  }

  mock_resource "aws_cloudwatch_event_rule" {
    defaults = {
      arn = "arn:aws:events:eu-west-1:123456789012:rule/mock"
    }
  }

  mock_resource "aws_sns_topic" {
    defaults = {
      arn = "arn:aws:sns:eu-west-1:123456789012:mock"
    }
  }

  mock_resource "aws_cloudwatch_log_group" {
    defaults = {
      arn = "arn:aws:logs:eu-west-1:123456789012:log-group:mock"
    }
  }

  mock_data "aws_ssm_parameter" {
    defaults = {
      insecure_value = "ami-0123456789abcdef0"
    }
  }
}

# The mocked provider cannot open ephemeral resources, so the tests give the two passwords as
# (ephemeral) variables instead of letting Secrets Manager draw them.
# A real provider that never calls AWS: the generators it would open are off in the tests.
provider "aws" {
  alias                       = "secrets"
  region                      = "eu-west-1"
  access_key                  = "mock"
  secret_key                  = "mock"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
}

variables {
  region                = "eu-west-1"
  app_image_tag         = "0123456789ab"
  gpu_image_tag         = "0123456789ab"
  generate_secrets      = false
  db_password           = "0123456789abcdef0123456789abcdef01234567"
  prefect_auth_password = "fedcba9876543210fedcba9876543210fedcba98"
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

  # --- secrets stay out of the state: write-only arguments, versioned together ---
  assert {
    condition = alltrue([
      aws_db_instance.main.password == null,
      aws_db_instance.main.password_wo == null,
      aws_secretsmanager_secret_version.database_url.secret_string_wo == null,
      aws_secretsmanager_secret_version.prefect_database_url.secret_string_wo == null,
      aws_secretsmanager_secret_version.prefect_auth.secret_string_wo == null,
    ])
    error_message = "no password or secret value is kept in the state"
  }

  assert {
    condition = alltrue([
      aws_db_instance.main.password_wo_version == 1,
      aws_secretsmanager_secret_version.database_url.secret_string_wo_version == 1,
      aws_secretsmanager_secret_version.prefect_database_url.secret_string_wo_version == 1,
      aws_secretsmanager_secret_version.prefect_auth.secret_string_wo_version == 1,
    ])
    error_message = "the password and the URLs that embed it are written through write-only arguments of one version"
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
    condition = (
      contains([for e in jsondecode(aws_ecs_task_definition.prefect_server.container_definitions)[0].secrets : e.name], "PREFECT_SERVER_API_AUTH_STRING")
      && alltrue([for k, td in aws_ecs_task_definition.app : contains([for e in jsondecode(td.container_definitions)[0].secrets : e.name], "PREFECT_API_AUTH_STRING")])
      && contains([for e in jsondecode(aws_ecs_task_definition.gpu.container_definitions)[0].secrets : e.name], "PREFECT_API_AUTH_STRING")
    )
    error_message = "the Prefect API requires basic auth and every client (workers, bots, GPU tasks) sends it"
  }

  assert {
    condition     = toset([for e in jsondecode(aws_ecs_task_definition.prefect_server.container_definitions)[0].secrets : e.valueFrom if e.name == "PREFECT_SERVER_API_AUTH_STRING"]) == toset([for e in jsondecode(aws_ecs_task_definition.gpu.container_definitions)[0].secrets : e.valueFrom if e.name == "PREFECT_API_AUTH_STRING"])
    error_message = "server and clients read the same auth secret"
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
    ]) if k != "gpu-worker"])
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

  # --- ECS observer ---
  assert {
    condition = jsondecode(aws_cloudwatch_event_rule.ecs_task_state.event_pattern) == {
      source        = ["aws.ecs"]
      "detail-type" = ["ECS Task State Change"]
      detail        = { clusterArn = [aws_ecs_cluster.main.arn] }
    }
    error_message = "the rule takes the task state changes of the Encore cluster only"
  }

  assert {
    condition     = aws_cloudwatch_event_target.ecs_task_state.arn == aws_sqs_queue.ecs_events.arn && aws_cloudwatch_event_target.ecs_task_state.rule == aws_cloudwatch_event_rule.ecs_task_state.name
    error_message = "the rule's target is the observer's queue"
  }

  assert {
    condition = (
      jsondecode(aws_sqs_queue.ecs_events.redrive_policy).deadLetterTargetArn == aws_sqs_queue.ecs_events_dlq.arn
      && jsondecode(aws_sqs_queue.ecs_events.redrive_policy).maxReceiveCount == 3
      && aws_sqs_queue.ecs_events_dlq.message_retention_seconds == 1209600
    )
    error_message = "unhandled events go to the dead-letter queue after three receives"
  }

  assert {
    condition = (
      one(jsondecode(aws_sqs_queue_policy.ecs_events.policy).Statement).Principal.Service == "events.amazonaws.com"
      && one(jsondecode(aws_sqs_queue_policy.ecs_events.policy).Statement).Action == "sqs:SendMessage"
      && one(jsondecode(aws_sqs_queue_policy.ecs_events.policy).Statement).Condition.ArnEquals["aws:SourceArn"] == aws_cloudwatch_event_rule.ecs_task_state.arn
    )
    error_message = "only the rule may send to the queue"
  }

  assert {
    condition = alltrue([for kv in [
      "PREFECT_INTEGRATIONS_AWS_ECS_OBSERVER_ENABLED=true",
      "PREFECT_INTEGRATIONS_AWS_ECS_OBSERVER_SQS_QUEUE_NAME=encore-ecs-events",
      "PREFECT_INTEGRATIONS_AWS_ECS_OBSERVER_SQS_QUEUE_REGION=eu-west-1",
    ] : contains([for e in jsondecode(aws_ecs_task_definition.app["gpu-worker"].container_definitions)[0].environment : "${e.name}=${e.value}"], kv)])
    error_message = "the ECS worker's observer reads the queue"
  }

  assert {
    condition = length([
      for st in jsondecode(aws_iam_role_policy.ecs_worker.policy).Statement : st
      if st.Resource == aws_sqs_queue.ecs_events.arn && contains(st.Action, "sqs:ReceiveMessage") && contains(st.Action, "sqs:DeleteMessage") && contains(st.Action, "sqs:GetQueueUrl")
    ]) == 1
    error_message = "the ECS worker may read and delete the queue's messages, on that queue only"
  }

  # --- the ECS worker runs the Encore GPU family and nothing else ---
  assert {
    condition = alltrue(flatten([
      for st in jsondecode(aws_iam_role_policy.ecs_worker.policy).Statement : [
        for r in flatten([st.Resource]) : r == "arn:aws:ecs:eu-west-1:123456789012:task-definition/encore-gpu:*"
      ] if contains(flatten([st.Action]), "ecs:RunTask")
    ]))
    error_message = "ecs:RunTask only on the encore-gpu family"
  }

  assert {
    condition = alltrue([
      for st in jsondecode(aws_iam_role_policy.ecs_worker.policy).Statement :
      !contains(flatten([st.Action]), "ecs:RegisterTaskDefinition") && !contains(flatten([st.Action]), "ecs:*") && !contains(flatten([st.Action]), "*")
    ])
    error_message = "the ECS worker may not register task definitions (it could run any image)"
  }

  assert {
    condition = alltrue(flatten([
      for st in jsondecode(aws_iam_role_policy.ecs_worker.policy).Statement : [
        for r in flatten([st.Resource]) : contains([aws_iam_role.gpu_task.arn, aws_iam_role.execution.arn], r)
      ] if contains(flatten([st.Action]), "iam:PassRole")
    ]))
    error_message = "iam:PassRole only for the GPU task's roles"
  }

  # --- GPU tasks: no chat tokens, a role that reads no secret ---
  assert {
    condition = length(setintersection(
      toset([for e in jsondecode(aws_ecs_task_definition.gpu.container_definitions)[0].secrets : e.name]),
      toset(["ENCORE_TELEGRAM_TOKEN", "ENCORE_DISCORD_TOKEN"]),
    )) == 0 && length([for e in jsondecode(aws_ecs_task_definition.gpu.container_definitions)[0].environment : e if strcontains(e.name, "TOKEN")]) == 0
    error_message = "GPU tasks get no chat token"
  }

  assert {
    condition     = !strcontains(aws_iam_role_policy.gpu_task.policy, "secretsmanager") && aws_ecs_task_definition.gpu.task_role_arn == aws_iam_role.gpu_task.arn
    error_message = "the GPU task role reads no secret"
  }

  assert {
    condition = alltrue([
      contains([for e in jsondecode(aws_ecs_task_definition.app["cpu-worker"].container_definitions)[0].secrets : e.name], "ENCORE_TELEGRAM_TOKEN"),
      contains([for e in jsondecode(aws_ecs_task_definition.app["bot-telegram"].container_definitions)[0].secrets : e.name], "ENCORE_TELEGRAM_TOKEN"),
      !contains([for e in jsondecode(aws_ecs_task_definition.app["gpu-worker"].container_definitions)[0].secrets : e.name], "ENCORE_TELEGRAM_TOKEN"),
    ])
    error_message = "the chat tokens go to the bots and the CPU worker (which posts results) only"
  }

  # --- images ---
  assert {
    condition     = aws_ecr_repository.app.image_tag_mutability == "IMMUTABLE" && aws_ecr_repository.gpu.image_tag_mutability == "IMMUTABLE"
    error_message = "image tags are immutable"
  }

  assert {
    condition     = endswith(jsondecode(aws_ecs_task_definition.gpu.container_definitions)[0].image, ":0123456789ab") && output.prefect_tfvars.gpu_task_family == "encore-gpu"
    error_message = "GPU tasks run the image of one revision; the pool gets the family"
  }

  # --- cost guards ---
  assert {
    condition = alltrue([
      aws_cloudwatch_metric_alarm.gpu_hours.namespace == "AWS/AutoScaling",
      aws_cloudwatch_metric_alarm.gpu_hours.metric_name == "GroupInServiceInstances",
      aws_cloudwatch_metric_alarm.gpu_hours.dimensions.AutoScalingGroupName == aws_autoscaling_group.gpu.name,
      aws_cloudwatch_metric_alarm.gpu_hours.statistic == "Minimum",
      aws_cloudwatch_metric_alarm.gpu_hours.period * aws_cloudwatch_metric_alarm.gpu_hours.evaluation_periods == 3 * 3600,
      aws_cloudwatch_metric_alarm.gpu_hours.threshold == 1,
      contains(aws_cloudwatch_metric_alarm.gpu_hours.alarm_actions, aws_sns_topic.alerts.arn),
      contains(aws_autoscaling_group.gpu.enabled_metrics, "GroupInServiceInstances"),
    ])
    error_message = "an alarm notifies the alerts topic when a GPU instance has been in service for 3 hours"
  }

  assert {
    condition     = aws_cloudwatch_metric_alarm.observer_dlq.dimensions.QueueName == aws_sqs_queue.ecs_events_dlq.name
    error_message = "dead letters of the observer raise an alarm"
  }

  assert {
    condition = (
      aws_budgets_budget.monthly.limit_amount == "400.00" && aws_budgets_budget.monthly.time_unit == "MONTHLY"
      && alltrue([for n in aws_budgets_budget.monthly.notification : contains(n.subscriber_sns_topic_arns, aws_sns_topic.alerts.arn)])
      && length(aws_sns_topic_subscription.alert_email) == 0
    )
    error_message = "a monthly budget notifies the alerts topic; no e-mail without alert_email"
  }

  # --- CPU side ---
  assert {
    condition = (
      aws_appautoscaling_target.cpu_worker.min_capacity == 1 && aws_appautoscaling_target.cpu_worker.max_capacity == 4
      && aws_appautoscaling_target.cpu_worker.resource_id == "service/encore/cpu-worker"
      && one(aws_appautoscaling_policy.cpu_worker.target_tracking_scaling_policy_configuration).target_value == 60
    )
    error_message = "the CPU worker scales between 1 and 4 tasks on CPU"
  }

  assert {
    condition     = strcontains(jsondecode(aws_ecs_task_definition.app["cpu-worker"].container_definitions)[0].command[2], "--limit 4") && output.prefect_tfvars.cpu_concurrency == 16
    error_message = "each CPU worker runs at most 4 flow runs; the pool's limit covers the largest scale-out"
  }
}

run "alert_email_and_budget" {
  command = plan

  variables {
    alert_email        = "ops@example.com"
    monthly_budget_usd = 150
    gpu_alarm_hours    = 6
  }

  assert {
    condition     = one(aws_sns_topic_subscription.alert_email).endpoint == "ops@example.com" && one(aws_sns_topic_subscription.alert_email).protocol == "email"
    error_message = "alert_email subscribes an address"
  }

  assert {
    condition     = aws_budgets_budget.monthly.limit_amount == "150.00" && alltrue([for n in aws_budgets_budget.monthly.notification : n.subscriber_email_addresses == toset(["ops@example.com"])])
    error_message = "the budget follows its variable and mails the address"
  }

  assert {
    condition     = aws_cloudwatch_metric_alarm.gpu_hours.evaluation_periods == 6
    error_message = "gpu_alarm_hours sets the alarm's length"
  }
}

run "latest_is_refused" {
  command = plan

  variables {
    gpu_image_tag = "latest"
  }

  expect_failures = [var.gpu_image_tag]
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
