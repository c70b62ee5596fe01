output "bucket_name" {
  description = "S3 bucket of Encore's files."
  value       = aws_s3_bucket.files.bucket
}

output "storage_url" {
  description = "ENCORE_STORAGE_URL of the cluster."
  value       = local.storage_url
}

output "app_repository_url" {
  description = "ECR repository of the app image (bots, Prefect server, workers)."
  value       = aws_ecr_repository.app.repository_url
}

output "gpu_repository_url" {
  description = "ECR repository of the GPU image (gpu_worker/Dockerfile)."
  value       = aws_ecr_repository.gpu.repository_url
}

output "cluster_name" {
  description = "ECS cluster."
  value       = aws_ecs_cluster.main.name
}

output "gpu_task_definition_arn" {
  description = "GPU task definition (with revision) that this apply registered."
  value       = aws_ecs_task_definition.gpu.arn
}

output "gpu_task_family" {
  description = "GPU task definition family: what the encore-gpu work pool runs (its latest revision)."
  value       = aws_ecs_task_definition.gpu.family
}

output "observer_queue_name" {
  description = "SQS queue of ECS task events read by the ECS worker's observer."
  value       = aws_sqs_queue.ecs_events.name
}

output "alerts_topic_arn" {
  description = "SNS topic of the GPU-hours, dead-letter and budget alerts."
  value       = aws_sns_topic.alerts.arn
}

output "prefect_auth_secret_arn" {
  description = "Secret holding the Prefect API auth string (user:password)."
  value       = aws_secretsmanager_secret.prefect_auth.arn
}

output "gpu_capacity_provider" {
  description = "Capacity provider of the GPU Auto Scaling group."
  value       = aws_ecs_capacity_provider.gpu.name
}

output "gpu_count" {
  description = "Most GPU instances at once: the encore-gpu pool's concurrency limit."
  value       = var.gpu_count
}

output "db_endpoint" {
  description = "PostgreSQL host:port (private)."
  value       = aws_db_instance.main.endpoint
}

output "database_url_secret_arn" {
  description = "Secret holding ENCORE_DATABASE_URL."
  value       = aws_secretsmanager_secret.database_url.arn
}

output "prefect_api_url" {
  description = "PREFECT_API_URL inside the VPC."
  value       = local.prefect_api_url
}

output "prefect_tfvars" {
  description = "Input for infra/terraform/prefect: terraform output -json prefect_tfvars > ../prefect/aws.auto.tfvars.json"
  value = {
    cluster               = aws_ecs_cluster.main.name
    gpu_task_family       = aws_ecs_task_definition.gpu.family
    cpu_concurrency       = var.cpu_worker_max_count * var.cpu_worker_limit
    gpu_capacity_provider = aws_ecs_capacity_provider.gpu.name
    gpu_count             = var.gpu_count
  }
}
