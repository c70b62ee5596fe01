# Secrets. None of their values is in the Terraform state:
# - the chat tokens are put by the operator after the first apply (README, Apply step 2):
#     aws secretsmanager put-secret-value --secret-id encore/telegram-token --secret-string '123:AA...'
#   A task that starts before its secret has a value fails and ECS retries it.
# - the Prefect API auth string and the database URLs (database.tf) are drawn as ephemeral
#   values and written through write-only arguments (secret_string_wo).

resource "aws_secretsmanager_secret" "telegram_token" {
  count = var.telegram_enabled ? 1 : 0

  name                    = "${var.name}/telegram-token"
  description             = "ENCORE_TELEGRAM_TOKEN: the Telegram bot token from BotFather"
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret" "discord_token" {
  count = var.discord_enabled ? 1 : 0

  name                    = "${var.name}/discord-token"
  description             = "ENCORE_DISCORD_TOKEN: the Discord bot token from the Developer Portal"
  recovery_window_in_days = 7
}

# Basic auth of the Prefect API ("encore:<password>"): the server requires it
# (PREFECT_SERVER_API_AUTH_STRING) and every client sends it (PREFECT_API_AUTH_STRING):
# workers, bots, GPU tasks, and the operator through the port forward (README).
ephemeral "aws_secretsmanager_random_password" "prefect_auth" {
  count    = var.generate_secrets ? 1 : 0
  provider = aws.secrets

  password_length     = 40
  exclude_punctuation = true
  include_space       = false
}

resource "aws_secretsmanager_secret" "prefect_auth" {
  name                    = "${var.name}/prefect-api-auth"
  description             = "PREFECT_SERVER_API_AUTH_STRING / PREFECT_API_AUTH_STRING: user:password of the Prefect API"
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "prefect_auth" {
  secret_id                = aws_secretsmanager_secret.prefect_auth.id
  secret_string_wo         = "encore:${var.generate_secrets ? ephemeral.aws_secretsmanager_random_password.prefect_auth[0].random_password : var.prefect_auth_password}"
  secret_string_wo_version = var.secrets_version
}

locals {
  prefect_auth_client = { name = "PREFECT_API_AUTH_STRING", valueFrom = aws_secretsmanager_secret.prefect_auth.arn }
  database_secret     = { name = "ENCORE_DATABASE_URL", valueFrom = aws_secretsmanager_secret.database_url.arn }
  chat_secrets = concat(
    [for s in aws_secretsmanager_secret.telegram_token : { name = "ENCORE_TELEGRAM_TOKEN", valueFrom = s.arn }],
    [for s in aws_secretsmanager_secret.discord_token : { name = "ENCORE_DISCORD_TOKEN", valueFrom = s.arn }],
  )

  # The bots and the CPU worker (which posts results to the chats) get everything.
  app_secrets = concat([local.database_secret, local.prefect_auth_client], local.chat_secrets)
  # GPU tasks parse users' files: no chat tokens, only what a GPU step needs.
  gpu_secrets = [local.database_secret, local.prefect_auth_client]
  # The ECS worker only talks to the Prefect API and AWS.
  ecs_worker_secrets = [local.prefect_auth_client]

  app_secret_arns = [for s in local.app_secrets : s.valueFrom]
  all_secret_arns = concat(local.app_secret_arns, [aws_secretsmanager_secret.prefect_database_url.arn])
}
