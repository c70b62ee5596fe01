locals {
  prefect_port    = 4200
  namespace       = "${var.name}.internal"
  prefect_api_url = "http://prefect-server.${local.namespace}:${local.prefect_port}/api"
  app_image       = "${aws_ecr_repository.app.repository_url}:${var.app_image_tag}"
  gpu_image       = "${aws_ecr_repository.gpu.repository_url}:${var.gpu_image_tag}"

  # Work pools: the names match flows/settings.py (ENCORE_CPU_POOL, ENCORE_GPU_POOL).
  cpu_pool = "encore-cpu"
  gpu_pool = "encore-gpu"

  telemetry_off = {
    PREFECT_SERVER_ANALYTICS_ENABLED = "false"
    DO_NOT_TRACK                     = "1"
  }

  # Environment of every Encore container (bots, workers, GPU tasks).
  app_env = merge(local.telemetry_off, {
    ENCORE_RUN_MODE      = "cluster"
    ENCORE_STORAGE_URL   = local.storage_url
    ENCORE_S3_REGION     = var.region
    ENCORE_CPU_POOL      = local.cpu_pool
    ENCORE_GPU_POOL      = local.gpu_pool
    ENCORE_GPU_POOL_TYPE = "ecs"
    ENCORE_GPU_COUNT     = tostring(var.gpu_count)
    PREFECT_API_URL      = local.prefect_api_url
    AWS_DEFAULT_REGION   = var.region
  }, var.extra_environment)
  app_environment = [for k in sort(keys(local.app_env)) : { name = k, value = local.app_env[k] }]

  # prefect-aws 0.7's ECS observer (observer.tf), in the ECS worker.
  observer_env = {
    PREFECT_INTEGRATIONS_AWS_ECS_OBSERVER_ENABLED          = "true"
    PREFECT_INTEGRATIONS_AWS_ECS_OBSERVER_SQS_QUEUE_NAME   = aws_sqs_queue.ecs_events.name
    PREFECT_INTEGRATIONS_AWS_ECS_OBSERVER_SQS_QUEUE_REGION = var.region
  }

  # A worker waits for its work pool (made by infra/terraform/prefect) rather than creating
  # one with default settings.
  wait_for_pool = { for p in [local.cpu_pool, local.gpu_pool] : p => "until prefect work-pool inspect ${p} >/dev/null 2>&1; do echo waiting for work pool ${p}; sleep 15; done" }

  # The Fargate services that run the app image. The Prefect server is declared on its own below.
  all_app_services = {
    cpu-worker = {
      # --limit: flow runs one task runs at once; more wait in Prefect (queued), and the
      # service scales out on CPU (autoscaling below) up to cpu_worker_max_count tasks.
      command = ["sh", "-c", "${local.wait_for_pool[local.cpu_pool]}; exec prefect worker start --pool ${local.cpu_pool} --type process --limit ${var.cpu_worker_limit}"]
      cpu     = var.cpu_worker_cpu
      memory  = var.cpu_worker_memory
      count   = var.cpu_worker_min_count
      role    = aws_iam_role.app.arn
      env     = local.app_env
      secrets = local.app_secrets
    }
    gpu-worker = {
      # Runs no flow itself: it starts the GPU task definition (gpu.tf) for each flow run, and
      # its ECS observer reads the task events (observer.tf) to mark crashed or never-started
      # GPU runs as crashed.
      command = ["sh", "-c", "${local.wait_for_pool[local.gpu_pool]}; exec prefect worker start --pool ${local.gpu_pool} --type ecs"]
      cpu     = 512
      memory  = 1024
      count   = 1
      role    = aws_iam_role.ecs_worker.arn
      env     = merge(local.app_env, local.observer_env)
      secrets = local.ecs_worker_secrets
    }
    bot-telegram = {
      command = ["encore", "bot", "telegram"]
      cpu     = var.bot_cpu
      memory  = var.bot_memory
      count   = 1
      role    = aws_iam_role.app.arn
      env     = local.app_env
      secrets = local.app_secrets
    }
    bot-discord = {
      command = ["encore", "bot", "discord"]
      cpu     = var.bot_cpu
      memory  = var.bot_memory
      count   = 1
      role    = aws_iam_role.app.arn
      env     = local.app_env
      secrets = local.app_secrets
    }
  }
  disabled_services = concat(var.telegram_enabled ? [] : ["bot-telegram"], var.discord_enabled ? [] : ["bot-discord"])
  app_services      = { for k, v in local.all_app_services : k => v if !contains(local.disabled_services, k) }

  # The server creates Encore's database when it is missing, then starts.
  create_encore_db = <<-PY
    import os, psycopg
    url = os.environ["ENCORE_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url, dbname="postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", ("${local.db_encore}",)).fetchone():
            conn.execute("CREATE DATABASE ${local.db_encore}")
  PY
}

resource "aws_ecs_cluster" "main" {
  name = var.name

  setting {
    name  = "containerInsights"
    value = "disabled"
  }
}

resource "aws_ecs_cluster_capacity_providers" "main" {
  cluster_name       = aws_ecs_cluster.main.name
  capacity_providers = ["FARGATE", "FARGATE_SPOT", aws_ecs_capacity_provider.gpu.name]

  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
  }
}

resource "aws_cloudwatch_log_group" "main" {
  for_each = toset(["prefect-server", "cpu-worker", "gpu-worker", "bot-telegram", "bot-discord", "gpu"])

  name              = "/${var.name}/${each.key}"
  retention_in_days = var.log_retention_days
}

# The Prefect API's stable name inside the VPC: prefect-server.<name>.internal. A Cloud Map
# DNS name (not Service Connect) because the GPU tasks that the ECS worker starts are not part
# of a service and still need to reach the API.
resource "aws_service_discovery_private_dns_namespace" "main" {
  name = local.namespace
  vpc  = local.vpc_id
}

resource "aws_service_discovery_service" "prefect_server" {
  name = "prefect-server"

  dns_config {
    namespace_id   = aws_service_discovery_private_dns_namespace.main.id
    routing_policy = "MULTIVALUE"

    dns_records {
      type = "A"
      ttl  = 10
    }
  }

  health_check_custom_config {
    failure_threshold = 1
  }
}

# --- Prefect server -------------------------------------------------------------------------

resource "aws_ecs_task_definition" "prefect_server" {
  family                   = "${var.name}-prefect-server"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.server_cpu
  memory                   = var.server_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.server.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  container_definitions = jsonencode([{
    name      = "prefect-server"
    image     = local.app_image
    essential = true
    command = [
      "sh", "-c",
      "python -c \"$CREATE_ENCORE_DB\" && exec prefect server start --host 0.0.0.0 --port ${local.prefect_port}",
    ]
    portMappings = [{ containerPort = local.prefect_port, protocol = "tcp", name = "api" }]
    environment = [for k, v in merge(local.telemetry_off, {
      CREATE_ENCORE_DB   = local.create_encore_db
      PREFECT_UI_API_URL = "http://localhost:${local.prefect_port}/api" # through a port forward
    }) : { name = k, value = v }]
    secrets = [
      { name = "PREFECT_API_DATABASE_CONNECTION_URL", valueFrom = aws_secretsmanager_secret.prefect_database_url.arn },
      { name = "ENCORE_DATABASE_URL", valueFrom = aws_secretsmanager_secret.database_url.arn },
      # Basic auth: every API call (and the UI) needs this user:password.
      { name = "PREFECT_SERVER_API_AUTH_STRING", valueFrom = aws_secretsmanager_secret.prefect_auth.arn },
    ]
    healthCheck = {
      # Sends the auth string, so the check holds whether or not the server exempts /health.
      command     = ["CMD-SHELL", "python -c \"import base64, os, urllib.request; auth = base64.b64encode(os.environ['PREFECT_SERVER_API_AUTH_STRING'].encode()).decode(); urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:${local.prefect_port}/api/health', headers={'Authorization': 'Basic ' + auth}), timeout=4)\""]
      interval    = 30
      timeout     = 5
      retries     = 3
      startPeriod = 60
    }
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.main["prefect-server"].name
        awslogs-region        = var.region
        awslogs-stream-prefix = "ecs"
      }
    }
  }])
}

resource "aws_ecs_service" "prefect_server" {
  name                   = "prefect-server"
  cluster                = aws_ecs_cluster.main.id
  task_definition        = aws_ecs_task_definition.prefect_server.arn
  desired_count          = 1
  launch_type            = "FARGATE"
  enable_execute_command = true
  # One server on one database: stop the old task before starting the new one.
  deployment_minimum_healthy_percent = 0
  deployment_maximum_percent         = 100

  network_configuration {
    subnets          = local.subnet_ids
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = false
  }

  service_registries {
    registry_arn = aws_service_discovery_service.prefect_server.arn
  }

  depends_on = [aws_secretsmanager_secret_version.prefect_database_url, aws_secretsmanager_secret_version.prefect_auth]
}

# --- workers and bots -----------------------------------------------------------------------

resource "aws_ecs_task_definition" "app" {
  for_each = local.app_services

  family                   = "${var.name}-${each.key}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = each.value.cpu
  memory                   = each.value.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = each.value.role

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  container_definitions = jsonencode([{
    name        = each.key
    image       = local.app_image
    essential   = true
    command     = each.value.command
    environment = [for k in sort(keys(each.value.env)) : { name = k, value = each.value.env[k] }]
    secrets     = each.value.secrets
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.main[each.key].name
        awslogs-region        = var.region
        awslogs-stream-prefix = "ecs"
      }
    }
  }])
}

resource "aws_ecs_service" "app" {
  for_each = local.app_services

  name                   = each.key
  cluster                = aws_ecs_cluster.main.id
  task_definition        = aws_ecs_task_definition.app[each.key].arn
  desired_count          = each.value.count
  launch_type            = "FARGATE"
  enable_execute_command = true
  # A bot polls one update stream: never run two of the same bot at once.
  deployment_minimum_healthy_percent = 0
  deployment_maximum_percent         = 100

  network_configuration {
    subnets          = local.subnet_ids
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = false
  }

  lifecycle {
    # Autoscaling owns the CPU worker's count; the others stay at 1 (pause one with the CLI).
    ignore_changes = [desired_count]
  }

  depends_on = [aws_ecs_service.prefect_server, aws_secretsmanager_secret_version.database_url]
}

# --- CPU worker autoscaling -----------------------------------------------------------------
# Target tracking on the tasks' average CPU: remixes (ffmpeg) and deliveries make CPU; parent
# flows waiting on GPU steps do not, and they are bounded by the worker's --limit and the
# encore-cpu pool's concurrency limit (prefect module) instead of piling up as processes.

resource "aws_appautoscaling_target" "cpu_worker" {
  service_namespace  = "ecs"
  scalable_dimension = "ecs:service:DesiredCount"
  resource_id        = "service/${aws_ecs_cluster.main.name}/${aws_ecs_service.app["cpu-worker"].name}"
  min_capacity       = var.cpu_worker_min_count
  max_capacity       = var.cpu_worker_max_count
}

resource "aws_appautoscaling_policy" "cpu_worker" {
  name               = "${var.name}-cpu-worker-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.cpu_worker.service_namespace
  scalable_dimension = aws_appautoscaling_target.cpu_worker.scalable_dimension
  resource_id        = aws_appautoscaling_target.cpu_worker.resource_id

  target_tracking_scaling_policy_configuration {
    target_value = var.cpu_worker_target_cpu_percent
    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
    scale_out_cooldown = 60
    # Scaling in stops a task and the flow runs in it: scale in slowly.
    scale_in_cooldown = 900
  }
}
