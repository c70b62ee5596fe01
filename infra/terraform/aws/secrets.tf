# Chat tokens. Terraform makes the secrets; the value comes from var.telegram_token /
# var.discord_token, or you put it yourself so it never enters the Terraform state:
#   aws secretsmanager put-secret-value --secret-id encore/telegram-token --secret-string '123:AA...'
# A task that starts before its secret has a value fails and ECS retries it.

resource "aws_secretsmanager_secret" "telegram_token" {
  count = var.telegram_enabled ? 1 : 0

  name                    = "${var.name}/telegram-token"
  description             = "ENCORE_TELEGRAM_TOKEN: the Telegram bot token from BotFather"
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "telegram_token" {
  count = var.telegram_enabled && var.telegram_token != null ? 1 : 0

  secret_id     = aws_secretsmanager_secret.telegram_token[0].id
  secret_string = var.telegram_token
}

resource "aws_secretsmanager_secret" "discord_token" {
  count = var.discord_enabled ? 1 : 0

  name                    = "${var.name}/discord-token"
  description             = "ENCORE_DISCORD_TOKEN: the Discord bot token from the Developer Portal"
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "discord_token" {
  count = var.discord_enabled && var.discord_token != null ? 1 : 0

  secret_id     = aws_secretsmanager_secret.discord_token[0].id
  secret_string = var.discord_token
}

locals {
  # Secrets every Encore container gets as environment variables.
  app_secrets = concat(
    [{ name = "ENCORE_DATABASE_URL", valueFrom = aws_secretsmanager_secret.database_url.arn }],
    [for s in aws_secretsmanager_secret.telegram_token : { name = "ENCORE_TELEGRAM_TOKEN", valueFrom = s.arn }],
    [for s in aws_secretsmanager_secret.discord_token : { name = "ENCORE_DISCORD_TOKEN", valueFrom = s.arn }],
  )
  app_secret_arns = [for s in local.app_secrets : s.valueFrom]
  all_secret_arns = concat(local.app_secret_arns, [aws_secretsmanager_secret.prefect_database_url.arn])
}
