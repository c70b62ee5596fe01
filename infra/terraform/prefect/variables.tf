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

variable "gpu_task_family" {
  description = "The GPU task definition family (output gpu_task_family of the AWS module); the pool runs its latest revision."
  type        = string
  default     = "encore-gpu"

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,255}$", var.gpu_task_family))
    error_message = "gpu_task_family is a family name without a revision (no ARN, no :N)."
  }
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
  description = "Flow runs at once on the CPU pool, all CPU worker tasks together (the AWS module's cpu_worker_max_count x cpu_worker_limit)."
  type        = number
  default     = 16

  validation {
    condition     = var.cpu_concurrency >= 1
    error_message = "cpu_concurrency must be at least 1."
  }
}

variable "prefect_basic_auth_key" {
  description = "The Prefect API's auth string (user:password), from the secret encore/prefect-api-auth; or set PREFECT_BASIC_AUTH_KEY."
  type        = string
  default     = null
  sensitive   = true
  ephemeral   = true
}
