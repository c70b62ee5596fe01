# The ECS observer of prefect-aws 0.7. The ECS worker returns as soon as a GPU task is
# submitted; whether the task then crashed, or never started (no GPU capacity, image pull
# failure, container dead before Prefect starts), it learns only from ECS "Task State Change"
# events, which EventBridge puts on this queue and the worker's observer reads
# (PREFECT_INTEGRATIONS_AWS_ECS_OBSERVER_SQS_QUEUE_NAME, set on the gpu-worker service in
# ecs.tf). Without it such a run stays PENDING for ever.

locals {
  observer_queue_name = "${var.name}-ecs-events"
}

resource "aws_sqs_queue" "ecs_events_dlq" {
  name                      = "${local.observer_queue_name}-dlq"
  message_retention_seconds = 1209600 # 14 days, the most SQS keeps: time to look at them
  sqs_managed_sse_enabled   = true
}

resource "aws_sqs_queue" "ecs_events" {
  name = local.observer_queue_name
  # Events are only useful while the run they describe is still undecided.
  message_retention_seconds  = var.observer_retention_seconds
  visibility_timeout_seconds = 300
  receive_wait_time_seconds  = 20
  sqs_managed_sse_enabled    = true

  # A message the observer failed to handle three times (it acknowledges only after its
  # handlers finished) is kept aside instead of looping.
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.ecs_events_dlq.arn
    maxReceiveCount     = 3
  })
}

resource "aws_sqs_queue_redrive_allow_policy" "ecs_events_dlq" {
  queue_url = aws_sqs_queue.ecs_events_dlq.id

  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.ecs_events.arn]
  })
}

# Task state changes of this cluster only (not every cluster of the account).
resource "aws_cloudwatch_event_rule" "ecs_task_state" {
  name        = "${var.name}-ecs-task-state"
  description = "ECS task state changes of the ${var.name} cluster, for the Prefect ECS worker's observer"

  event_pattern = jsonencode({
    source        = ["aws.ecs"]
    "detail-type" = ["ECS Task State Change"]
    detail        = { clusterArn = [aws_ecs_cluster.main.arn] }
  })
}

resource "aws_cloudwatch_event_target" "ecs_task_state" {
  rule      = aws_cloudwatch_event_rule.ecs_task_state.name
  target_id = "prefect-ecs-observer"
  arn       = aws_sqs_queue.ecs_events.arn
}

# Only this rule may send to the queue.
resource "aws_sqs_queue_policy" "ecs_events" {
  queue_url = aws_sqs_queue.ecs_events.id

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "EventBridgeRule"
      Effect    = "Allow"
      Principal = { Service = "events.amazonaws.com" }
      Action    = "sqs:SendMessage"
      Resource  = aws_sqs_queue.ecs_events.arn
      Condition = { ArnEquals = { "aws:SourceArn" = aws_cloudwatch_event_rule.ecs_task_state.arn } }
    }]
  })
}
