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

# --- app role: bots, CPU worker flow runs, GPU tasks ---------------------------------------

resource "aws_iam_role" "app" {
  name               = "${var.name}-app"
  assume_role_policy = local.ecs_tasks_trust
}

resource "aws_iam_role_policy" "app" {
  name = "encore-app"
  role = aws_iam_role.app.id

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
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
      {
        Sid      = "ReadSecrets"
        Effect   = "Allow"
        Action   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
        Resource = local.app_secret_arns
      },
      local.exec_statement,
    ]
  })
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

resource "aws_iam_role_policy" "ecs_worker" {
  name = "run-gpu-tasks"
  role = aws_iam_role.ecs_worker.id

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "RunTasks"
        Effect   = "Allow"
        Action   = ["ecs:RunTask"]
        Resource = "${local.arn_prefix}:ecs:${var.region}:${data.aws_caller_identity.current.account_id}:task-definition/${local.gpu_family}:*"
        Condition = {
          ArnEquals = { "ecs:cluster" = aws_ecs_cluster.main.arn }
        }
      },
      {
        Sid      = "WatchTasks"
        Effect   = "Allow"
        Action   = ["ecs:DescribeTasks", "ecs:StopTask"]
        Resource = "*"
        Condition = {
          ArnEquals = { "ecs:cluster" = aws_ecs_cluster.main.arn }
        }
      },
      {
        Sid    = "TaskDefinitions"
        Effect = "Allow"
        Action = [
          "ecs:DescribeTaskDefinition",
          "ecs:ListTaskDefinitions",
          "ecs:RegisterTaskDefinition",
          "ecs:DeregisterTaskDefinition",
          "ecs:TagResource",
          "ec2:DescribeVpcs",
          "ec2:DescribeSubnets",
        ]
        Resource = "*"
      },
      {
        Sid      = "PassTaskRoles"
        Effect   = "Allow"
        Action   = ["iam:PassRole"]
        Resource = [aws_iam_role.app.arn, aws_iam_role.execution.arn]
      },
      {
        Sid      = "ReadTaskLogs"
        Effect   = "Allow"
        Action   = ["logs:GetLogEvents", "logs:DescribeLogStreams"]
        Resource = "${aws_cloudwatch_log_group.main["gpu"].arn}:*"
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
