# RDS PostgreSQL 15, private. One instance, two databases: `prefect` (the Prefect server's,
# created with the instance) and `encore` (Encore's own; the Prefect server's task creates it
# on start when missing). Both run Alembic, so they cannot share one database.
#
# The master password is random (uuid() draws on crypto/rand), kept in state like any
# generated password, and stored in Secrets Manager as the two connection URLs the
# containers read. It is hex, so it needs no escaping inside a URL.

locals {
  db_user        = "encore"
  db_prefect     = "prefect"
  db_encore      = "encore"
  db_password    = replace(terraform_data.db_password.output, "-", "")
  db_host_port   = "${aws_db_instance.main.address}:${aws_db_instance.main.port}"
  encore_db_url  = "postgresql+psycopg://${local.db_user}:${local.db_password}@${local.db_host_port}/${local.db_encore}"
  prefect_db_url = "postgresql+asyncpg://${local.db_user}:${local.db_password}@${local.db_host_port}/${local.db_prefect}"
}

resource "terraform_data" "db_password" {
  input = uuid()

  lifecycle {
    ignore_changes = [input] # generated once, then kept
  }
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

  db_name  = local.db_prefect
  username = local.db_user
  password = local.db_password

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
  secret_id     = aws_secretsmanager_secret.database_url.id
  secret_string = local.encore_db_url
}

resource "aws_secretsmanager_secret" "prefect_database_url" {
  name                    = "${var.name}/prefect-database-url"
  description             = "PREFECT_API_DATABASE_CONNECTION_URL: the Prefect server's database"
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "prefect_database_url" {
  secret_id     = aws_secretsmanager_secret.prefect_database_url.id
  secret_string = local.prefect_db_url
}
