locals {
  arn_prefix = "arn:${data.aws_partition.current.partition}"

  ecs_tasks_trust = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ecs-tasks.amazonaws.com" }
      Action    = "sts:AssumeRole"
      Condition = { ArnLike = { "aws:SourceArn" = "${local.arn_prefix}:ecs:${var.region}:${data.aws_caller_identity.current.account_id}:*" } }
    }]
  })

  # ECS Exec (aws ecs execute-command, and SSM port forwarding to the Prefect UI).
  exec_statement = {
    Effect = "Allow"
    Action = [
      "ssmmessages:CreateControlChannel",
      "ssmmessages:CreateDataChannel",
      "ssmmessages:OpenControlChannel",
      "ssmmessages:OpenDataChannel",
    ]
    Resource = "*"
  }
}

# --- execution role: pulls images, writes logs, injects secrets ----------------------------

resource "aws_iam_role" "execution" {
  name               = "${var.name}-ecs-execution"
  assume_role_policy = local.ecs_tasks_trust
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "${local.arn_prefix}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

resource "aws_iam_role_policy" "execution_secrets" {
  name = "read-secrets"
  role = aws_iam_role.execution.id

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = ["secretsmanager:GetSecretValue"]
      Resource = local.all_secret_arns
    }]
  })
}

# --- app role: bots and CPU worker flow runs -----------------------------------------------

locals {
  files_statements = [
    {
      Sid      = "ListFiles"
      Effect   = "Allow"
      Action   = ["s3:ListBucket", "s3:GetBucketLocation", "s3:GetLifecycleConfiguration", "s3:ListBucketMultipartUploads"]
      Resource = aws_s3_bucket.files.arn
    },
    {
      Sid    = "ReadWriteFiles"
      Effect = "Allow"
      Action = [
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:AbortMultipartUpload",
        "s3:ListMultipartUploadParts",
      ]
      Resource = "${aws_s3_bucket.files.arn}/*"
    },
  ]
}

resource "aws_iam_role" "app" {
  name               = "${var.name}-app"
  assume_role_policy = local.ecs_tasks_trust
}

resource "aws_iam_role_policy" "app" {
  name = "encore-app"
  role = aws_iam_role.app.id

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(local.files_statements, [
      {
        Sid      = "ReadSecrets"
        Effect   = "Allow"
        Action   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
        Resource = local.app_secret_arns
      },
      local.exec_statement,
    ])
  })
}

# --- GPU task role: the files, nothing else ------------------------------------------------
# GPU tasks parse users' files. Their role reads no secret (the chat tokens least of all); the
# database URL and the Prefect auth string come in through the execution role.

resource "aws_iam_role" "gpu_task" {
  name               = "${var.name}-gpu-task"
  assume_role_policy = local.ecs_tasks_trust
}

resource "aws_iam_role_policy" "gpu_task" {
  name   = "encore-gpu"
  role   = aws_iam_role.gpu_task.id
  policy = jsonencode({ Version = "2012-10-17", Statement = concat(local.files_statements, [local.exec_statement]) })
}

# --- Prefect server -------------------------------------------------------------------------

resource "aws_iam_role" "server" {
  name               = "${var.name}-prefect-server"
  assume_role_policy = local.ecs_tasks_trust
}

resource "aws_iam_role_policy" "server" {
  name   = "ecs-exec"
  role   = aws_iam_role.server.id
  policy = jsonencode({ Version = "2012-10-17", Statement = [local.exec_statement] })
}

# --- ECS worker of the GPU pool: starts and watches GPU tasks ------------------------------

resource "aws_iam_role" "ecs_worker" {
  name               = "${var.name}-prefect-ecs-worker"
  assume_role_policy = local.ecs_tasks_trust
}

# The worker only runs the task definition Terraform registered (the pool names its family):
# no ecs:RegisterTaskDefinition at all, so it cannot run an image of its choosing, and
# iam:PassRole only for the GPU task's two roles.
locals {
  account_region  = "${var.region}:${data.aws_caller_identity.current.account_id}"
  gpu_family_arns = "${local.arn_prefix}:ecs:${local.account_region}:task-definition/${local.gpu_family}:*"
}

resource "aws_iam_role_policy" "ecs_worker" {
  name = "run-gpu-tasks"
  role = aws_iam_role.ecs_worker.id

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "RunGpuTasks"
        Effect    = "Allow"
        Action    = ["ecs:RunTask"]
        Resource  = local.gpu_family_arns
        Condition = { ArnEquals = { "ecs:cluster" = aws_ecs_cluster.main.arn } }
      },
      {
        # RunTask with tags (the flow run's labels, which the observer reads back).
        Sid       = "TagTasksAtLaunch"
        Effect    = "Allow"
        Action    = ["ecs:TagResource"]
        Resource  = "${local.arn_prefix}:ecs:${local.account_region}:task/${aws_ecs_cluster.main.name}/*"
        Condition = { StringEquals = { "ecs:CreateAction" = "RunTask" } }
      },
      {
        Sid       = "WatchAndStopTasks"
        Effect    = "Allow"
        Action    = ["ecs:DescribeTasks", "ecs:StopTask"]
        Resource  = "${local.arn_prefix}:ecs:${local.account_region}:task/${aws_ecs_cluster.main.name}/*"
        Condition = { ArnEquals = { "ecs:cluster" = aws_ecs_cluster.main.arn } }
      },
      {
        # Read-only calls that IAM cannot scope to a resource.
        Sid      = "ReadTaskDefinitions"
        Effect   = "Allow"
        Action   = ["ecs:DescribeTaskDefinition", "ec2:DescribeVpcs", "ec2:DescribeSubnets"]
        Resource = "*"
      },
      {
        Sid       = "PassGpuTaskRoles"
        Effect    = "Allow"
        Action    = ["iam:PassRole"]
        Resource  = [aws_iam_role.gpu_task.arn, aws_iam_role.execution.arn]
        Condition = { StringEquals = { "iam:PassedToService" = "ecs-tasks.amazonaws.com" } }
      },
      {
        Sid      = "ReadTaskLogs"
        Effect   = "Allow"
        Action   = ["logs:GetLogEvents", "logs:DescribeLogStreams", "logs:FilterLogEvents"]
        Resource = ["${aws_cloudwatch_log_group.main["gpu"].arn}:*", aws_cloudwatch_log_group.main["gpu"].arn]
      },
      {
        # The ECS observer (observer.tf).
        Sid      = "ReadTaskEvents"
        Effect   = "Allow"
        Action   = ["sqs:GetQueueUrl", "sqs:GetQueueAttributes", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"]
        Resource = aws_sqs_queue.ecs_events.arn
      },
      local.exec_statement,
    ]
  })
}

# --- GPU instances --------------------------------------------------------------------------

resource "aws_iam_role" "gpu_instance" {
  name = "${var.name}-gpu-instance"

  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ec2.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "aws_iam_role_policy_attachment" "gpu_instance_ecs" {
  role       = aws_iam_role.gpu_instance.name
  policy_arn = "${local.arn_prefix}:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"
}

resource "aws_iam_role_policy_attachment" "gpu_instance_ssm" {
  role       = aws_iam_role.gpu_instance.name
  policy_arn = "${local.arn_prefix}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "gpu_instance" {
  name = "${var.name}-gpu-instance"
  role = aws_iam_role.gpu_instance.name
}
