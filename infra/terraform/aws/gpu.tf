# GPU capacity that scales to zero: an Auto Scaling group of ECS GPU-optimised instances
# (min 0, desired 0) behind an ECS capacity provider with managed scaling. When the ECS
# worker of the encore-gpu pool starts a GPU task, the task waits in PROVISIONING, ECS scales
# the group out, and the task is placed once the instance joins. When no GPU task has run
# for a while (the CapacityProviderReservation alarm, about 15 minutes), ECS scales it back
# to zero. Fargate has no GPUs, hence EC2.

locals {
  gpu_family   = "${var.name}-gpu"
  gpu_provider = "${var.name}-gpu"
}

data "aws_ssm_parameter" "gpu_ami" {
  name = var.gpu_ami_ssm_parameter
}

resource "aws_launch_template" "gpu" {
  name_prefix   = "${var.name}-gpu-"
  image_id      = data.aws_ssm_parameter.gpu_ami.insecure_value
  instance_type = var.gpu_instance_type

  iam_instance_profile {
    arn = aws_iam_instance_profile.gpu_instance.arn
  }

  vpc_security_group_ids = [aws_security_group.tasks.id]

  # IMDSv2 only, one hop: containers (bridge network) cannot reach the instance role; they
  # use their task role.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  block_device_mappings {
    device_name = "/dev/xvda"

    ebs {
      volume_size           = var.gpu_root_volume_gb
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  # prefer-cached is safe because the repositories are IMMUTABLE: a tag (the git revision)
  # always names the same image, so a warm instance never runs old code under a new tag.
  user_data = base64encode(<<-EOT
    #!/bin/bash
    cat >> /etc/ecs/ecs.config <<'CONFIG'
    ECS_CLUSTER=${aws_ecs_cluster.main.name}
    ECS_ENABLE_GPU_SUPPORT=true
    ECS_IMAGE_PULL_BEHAVIOR=prefer-cached
    ECS_ENABLE_TASK_IAM_ROLE=true
    CONFIG
  EOT
  )

  tag_specifications {
    resource_type = "instance"
    tags          = { Name = "${var.name}-gpu" }
  }
}

resource "aws_autoscaling_group" "gpu" {
  name                = "${var.name}-gpu"
  min_size            = 0
  max_size            = var.gpu_count
  desired_capacity    = 0
  vpc_zone_identifier = local.subnet_ids

  # Managed termination protection: ECS only scales in instances that run no task.
  protect_from_scale_in = true

  # GroupInServiceInstances feeds the GPU-hours alarm (alerts.tf).
  enabled_metrics     = ["GroupInServiceInstances", "GroupDesiredCapacity"]
  metrics_granularity = "1Minute"

  launch_template {
    id      = aws_launch_template.gpu.id
    version = aws_launch_template.gpu.latest_version
  }

  tag {
    key                 = "AmazonECSManaged"
    value               = "true"
    propagate_at_launch = true
  }

  lifecycle {
    ignore_changes = [desired_capacity] # ECS managed scaling owns it
  }
}

resource "aws_ecs_capacity_provider" "gpu" {
  name = local.gpu_provider

  auto_scaling_group_provider {
    auto_scaling_group_arn         = aws_autoscaling_group.gpu.arn
    managed_termination_protection = "ENABLED"
    managed_draining               = "ENABLED"

    managed_scaling {
      status                    = "ENABLED"
      target_capacity           = 100
      minimum_scaling_step_size = 1
      maximum_scaling_step_size = var.gpu_count
      instance_warmup_period    = 300
    }
  }
}

# The task definition the encore-gpu work pool runs for every GPU flow run (separation, voice
# conversion, training). The pool names its family (local.gpu_family), so ECS runs the latest
# revision and an image change needs no change in Prefect. The ECS worker overrides the
# command with Prefect's flow-run command and adds the run's environment.
resource "aws_ecs_task_definition" "gpu" {
  family                   = local.gpu_family
  requires_compatibilities = ["EC2"]
  network_mode             = "bridge"
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.gpu_task.arn

  container_definitions = jsonencode([{
    # "prefect" is the container name the ECS worker looks for.
    name      = "prefect"
    image     = local.gpu_image
    essential = true
    # The image's ENTRYPOINT is `encore`; the worker's command is a full command line.
    entryPoint           = ["/usr/bin/env"]
    command              = ["encore", "models", "status"]
    cpu                  = var.gpu_task_cpu
    memory               = var.gpu_task_memory
    resourceRequirements = [{ type = "GPU", value = "1" }]
    environment          = concat(local.app_environment, [{ name = "ENCORE_DEVICE", value = "cuda" }])
    secrets              = local.gpu_secrets           # no chat tokens: the cpu side posts results
    linuxParameters      = { sharedMemorySize = 2048 } # PyTorch data loaders use /dev/shm
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.main["gpu"].name
        awslogs-region        = var.region
        awslogs-stream-prefix = "gpu"
      }
    }
  }])
}
