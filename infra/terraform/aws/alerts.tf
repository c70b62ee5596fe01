# Cost guards: an alarm when GPU instances stay up for hours (a hung step, a stuck scale-in),
# an alarm when the observer's dead-letter queue fills, and a monthly AWS budget. All of them
# notify one SNS topic; var.alert_email subscribes an address to it (confirm the e-mail AWS
# sends), or subscribe anything else to the topic_arn output.

resource "aws_sns_topic" "alerts" {
  name = "${var.name}-alerts"
  # No KMS key: CloudWatch alarms and AWS Budgets cannot publish to a topic encrypted with the
  # AWS-managed SNS key, and a customer key costs more than this topic carries (README, checkov).
}

resource "aws_sns_topic_policy" "alerts" {
  arn = aws_sns_topic.alerts.arn

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "AlarmsAndBudgets"
      Effect    = "Allow"
      Principal = { Service = ["cloudwatch.amazonaws.com", "budgets.amazonaws.com"] }
      Action    = "sns:Publish"
      Resource  = aws_sns_topic.alerts.arn
      Condition = { StringEquals = { "aws:SourceAccount" = data.aws_caller_identity.current.account_id } }
    }]
  })
}

resource "aws_sns_topic_subscription" "alert_email" {
  count = var.alert_email == null ? 0 : 1

  topic_arn = aws_sns_topic.alerts.arn
  protocol  = "email"
  endpoint  = var.alert_email
}

# GroupInServiceInstances (the GPU group publishes it, see gpu.tf) with the Minimum statistic
# over one-hour periods: the alarm fires when at least one GPU instance was in service during
# every minute of var.gpu_alarm_hours consecutive hours. Scale-to-zero normally removes an
# instance about 15 minutes after its last task, so hours of uninterrupted GPU time mean a long
# queue of work or something stuck (a hung step, instances ECS cannot scale in).
resource "aws_cloudwatch_metric_alarm" "gpu_hours" {
  alarm_name        = "${var.name}-gpu-running-for-hours"
  alarm_description = "GPU instances of ${var.name} have been running for ${var.gpu_alarm_hours} hours without a break."
  namespace         = "AWS/AutoScaling"
  metric_name       = "GroupInServiceInstances"
  dimensions        = { AutoScalingGroupName = aws_autoscaling_group.gpu.name }

  statistic           = "Minimum"
  period              = 3600
  evaluation_periods  = var.gpu_alarm_hours
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching" # no data: the group is empty

  alarm_actions = [aws_sns_topic.alerts.arn]
  ok_actions    = [aws_sns_topic.alerts.arn]
}

# Events the observer could not handle: crash detection is not working.
resource "aws_cloudwatch_metric_alarm" "observer_dlq" {
  alarm_name        = "${var.name}-ecs-events-dead-letters"
  alarm_description = "The Prefect ECS observer failed to handle ECS events; look at the ${aws_sqs_queue.ecs_events_dlq.name} queue and the gpu-worker logs."
  namespace         = "AWS/SQS"
  metric_name       = "ApproximateNumberOfMessagesVisible"
  dimensions        = { QueueName = aws_sqs_queue.ecs_events_dlq.name }

  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"

  alarm_actions = [aws_sns_topic.alerts.arn]
}

# The whole account's monthly cost (Encore's resources carry the Project tag, but cost
# allocation tags must be activated by hand before a budget can filter on them).
resource "aws_budgets_budget" "monthly" {
  name         = "${var.name}-monthly"
  budget_type  = "COST"
  limit_amount = format("%.2f", var.monthly_budget_usd)
  limit_unit   = "USD"
  time_unit    = "MONTHLY"

  notification {
    comparison_operator        = "GREATER_THAN"
    threshold                  = 80
    threshold_type             = "PERCENTAGE"
    notification_type          = "ACTUAL"
    subscriber_sns_topic_arns  = [aws_sns_topic.alerts.arn]
    subscriber_email_addresses = var.alert_email == null ? [] : [var.alert_email]
  }

  notification {
    comparison_operator        = "GREATER_THAN"
    threshold                  = 100
    threshold_type             = "PERCENTAGE"
    notification_type          = "FORECASTED"
    subscriber_sns_topic_arns  = [aws_sns_topic.alerts.arn]
    subscriber_email_addresses = var.alert_email == null ? [] : [var.alert_email]
  }

  depends_on = [aws_sns_topic_policy.alerts]
}
