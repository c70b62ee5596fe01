variable "prefect_endpoint" {
  description = "The Prefect server's URL as seen from where Terraform runs (the server is private; forward its port, see ../README.md)."
  type        = string
  default     = "http://localhost:4200"
}

# The rest comes from the AWS module:
#   terraform -chdir=../aws output -json prefect_tfvars > aws.auto.tfvars.json

variable "cluster" {
  description = "ECS cluster that runs the GPU tasks."
  type        = string
  default     = "encore"
}

variable "gpu_task_definition_arn" {
  description = "The GPU task definition (output gpu_task_definition_arn of the AWS module)."
  type        = string
}

variable "gpu_capacity_provider" {
  description = "Capacity provider of the GPU Auto Scaling group."
  type        = string
  default     = "encore-gpu"
}

variable "gpu_count" {
  description = "GPU flow runs at once: one per GPU instance (the AWS module's gpu_count)."
  type        = number
  default     = 1

  validation {
    condition     = var.gpu_count >= 1
    error_message = "gpu_count must be at least 1."
  }
}

variable "cpu_concurrency" {
  description = "Flow runs at once on the CPU pool; null for no limit."
  type        = number
  default     = null
}

variable "gpu_task_start_timeout_seconds" {
  description = "How long a GPU task may wait to start: a cold start boots an instance and pulls the GPU image."
  type        = number
  default     = 1800
}
