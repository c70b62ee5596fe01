# RDS PostgreSQL 15, private. One instance, two databases: `prefect` (the Prefect server's,
# created with the instance) and `encore` (Encore's own; the Prefect server's task creates it
# on start when missing). Both run Alembic, so they cannot share one database.
#
# The master password never enters the Terraform state or plan: Secrets Manager draws it as an
# ephemeral value, and it reaches RDS and the two connection-URL secrets only through
# write-only arguments (password_wo, secret_string_wo), which Terraform sends when their
# *_wo_version changes and never stores. The three share var.secrets_version, so bumping it
# rotates the password and rewrites both URLs in one apply. The password is alphanumeric, so
# it needs no escaping inside a URL.

ephemeral "aws_secretsmanager_random_password" "db" {
  count    = var.generate_secrets ? 1 : 0
  provider = aws.secrets

  password_length     = 40
  exclude_punctuation = true
  include_space       = false
}

locals {
  db_password  = var.generate_secrets ? ephemeral.aws_secretsmanager_random_password.db[0].random_password : var.db_password
  db_user      = "encore"
  db_prefect   = "prefect"
  db_encore    = "encore"
  db_host_port = "${aws_db_instance.main.address}:${aws_db_instance.main.port}"
}

resource "aws_db_subnet_group" "main" {
  name       = var.name
  subnet_ids = local.subnet_ids
}

resource "aws_db_instance" "main" {
  identifier     = var.name
  engine         = "postgres"
  engine_version = "15"
  instance_class = var.db_instance_class

  allocated_storage     = var.db_allocated_storage
  max_allocated_storage = var.db_allocated_storage * 5
  storage_type          = "gp3"
  storage_encrypted     = true

  db_name             = local.db_prefect
  username            = local.db_user
  password_wo         = local.db_password
  password_wo_version = var.secrets_version

  db_subnet_group_name   = aws_db_subnet_group.main.name
  vpc_security_group_ids = [aws_security_group.db.id]
  publicly_accessible    = false
  multi_az               = var.db_multi_az

  backup_retention_period    = 7
  auto_minor_version_upgrade = true
  deletion_protection        = var.db_deletion_protection
  skip_final_snapshot        = !var.db_deletion_protection
  final_snapshot_identifier  = var.db_deletion_protection ? "${var.name}-final" : null
  copy_tags_to_snapshot      = true
}

resource "aws_secretsmanager_secret" "database_url" {
  name                    = "${var.name}/database-url"
  description             = "ENCORE_DATABASE_URL: Encore's PostgreSQL database"
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "database_url" {
  secret_id                = aws_secretsmanager_secret.database_url.id
  secret_string_wo         = "postgresql+psycopg://${local.db_user}:${local.db_password}@${local.db_host_port}/${local.db_encore}"
  secret_string_wo_version = var.secrets_version
}

resource "aws_secretsmanager_secret" "prefect_database_url" {
  name                    = "${var.name}/prefect-database-url"
  description             = "PREFECT_API_DATABASE_CONNECTION_URL: the Prefect server's database"
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "prefect_database_url" {
  secret_id                = aws_secretsmanager_secret.prefect_database_url.id
  secret_string_wo         = "postgresql+asyncpg://${local.db_user}:${local.db_password}@${local.db_host_port}/${local.db_prefect}"
  secret_string_wo_version = var.secrets_version
}
