variable "region" {
  description = "AWS region to deploy into."
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "encore"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name))
    error_message = "name must be 2-21 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "tags" {
  description = "Extra tags for every resource."
  type        = map(string)
  default     = {}
}

# --- network -------------------------------------------------------------------------------

variable "vpc_id" {
  description = "An existing VPC to use. null: create a small VPC (2 public + 2 private subnets, one NAT gateway)."
  type        = string
  default     = null
}

variable "private_subnet_ids" {
  description = "With vpc_id: private subnets (at least two AZs) with outbound internet access, for the tasks, GPU instances and RDS."
  type        = list(string)
  default     = []
}

variable "vpc_cidr" {
  description = "CIDR of the VPC created when vpc_id is null."
  type        = string
  default     = "10.40.0.0/16"
}

# --- storage -------------------------------------------------------------------------------

variable "bucket_name" {
  description = "S3 bucket for Encore's files. null: <name>-files-<account id>."
  type        = string
  default     = null
}

variable "storage_prefix" {
  description = "Key prefix inside the bucket (ENCORE_STORAGE_URL=s3://bucket/<prefix>)."
  type        = string
  default     = "files"
}

variable "tmp_expiry_days" {
  description = "Days after which objects under <prefix>/tmp/ (cached stems, uploads, job scratch) expire."
  type        = number
  default     = 7

  validation {
    condition     = var.tmp_expiry_days >= 1
    error_message = "tmp_expiry_days must be at least 1."
  }
}

variable "force_destroy" {
  description = "Allow terraform destroy to delete a non-empty bucket and ECR repositories with images."
  type        = bool
  default     = false
}

# --- images --------------------------------------------------------------------------------

# The repositories are IMMUTABLE: a tag names one image for ever, so a task started on a warm
# instance that cached it runs the same code as one started cold. Tag with the git revision.

variable "app_image_tag" {
  description = "Tag of the app image (bots, Prefect server, workers): the git revision it was built from (git rev-parse --short=12 HEAD)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.app_image_tag)) && var.app_image_tag != "latest"
    error_message = "app_image_tag must be a valid image tag naming one build (the git revision), not latest."
  }
}

variable "gpu_image_tag" {
  description = "Tag of the GPU image (gpu_worker/Dockerfile): the git revision it was built from."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.gpu_image_tag)) && var.gpu_image_tag != "latest"
    error_message = "gpu_image_tag must be a valid image tag naming one build (the git revision), not latest."
  }
}

# --- database ------------------------------------------------------------------------------

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.t4g.small"
}

variable "db_allocated_storage" {
  description = "RDS storage in GiB (autoscaling up to 5x)."
  type        = number
  default     = 20
}

variable "db_multi_az" {
  description = "Run RDS Multi-AZ."
  type        = bool
  default     = false
}

variable "db_deletion_protection" {
  description = "Protect the database from deletion."
  type        = bool
  default     = true
}

# --- chat front ends -----------------------------------------------------------------------

variable "telegram_enabled" {
  description = "Run the Telegram bot (and give the workers its token for delivery)."
  type        = bool
  default     = true
}

variable "discord_enabled" {
  description = "Run the Discord bot (and give the workers its token for delivery)."
  type        = bool
  default     = true
}

variable "generate_secrets" {
  description = "Draw the database password and the Prefect API password in Secrets Manager (ephemeral, never stored). false: give them as db_password and prefect_auth_password (e.g. TF_VAR_... from your own vault) whenever secrets_version changes."
  type        = bool
  default     = true
}

variable "db_password" {
  description = "With generate_secrets = false: the database master password (alphanumeric). Ephemeral: never stored."
  type        = string
  default     = null
  ephemeral   = true
  sensitive   = true
}

variable "prefect_auth_password" {
  description = "With generate_secrets = false: the password of the Prefect API's basic auth (user encore). Ephemeral: never stored."
  type        = string
  default     = null
  ephemeral   = true
  sensitive   = true
}

variable "secrets_version" {
  description = "Bump to draw new generated secrets (the database password and the Prefect API auth string) and write them again; see README, Secrets."
  type        = number
  default     = 1
}

variable "extra_environment" {
  description = "More ENCORE_* (or other) environment variables for every Encore container."
  type        = map(string)
  default     = {}
}

# --- Fargate sizes -------------------------------------------------------------------------

variable "server_cpu" {
  type    = number
  default = 1024
}

variable "server_memory" {
  type    = number
  default = 2048
}

variable "cpu_worker_cpu" {
  description = "vCPU units of the CPU worker (remix with ffmpeg and the parent flows run here)."
  type        = number
  default     = 2048
}

variable "cpu_worker_memory" {
  type    = number
  default = 4096
}

variable "cpu_worker_min_count" {
  description = "Fewest CPU worker tasks (the service scales on CPU between min and max)."
  type        = number
  default     = 1

  validation {
    condition     = var.cpu_worker_min_count >= 1
    error_message = "cpu_worker_min_count must be at least 1: the parent flows run there."
  }
}

variable "cpu_worker_max_count" {
  description = "Most CPU worker tasks."
  type        = number
  default     = 4

  validation {
    condition     = var.cpu_worker_max_count >= var.cpu_worker_min_count
    error_message = "cpu_worker_max_count must be at least cpu_worker_min_count."
  }
}

variable "cpu_worker_limit" {
  description = "Flow runs one CPU worker task runs at once (prefect worker start --limit); the encore-cpu pool's limit is this times cpu_worker_max_count."
  type        = number
  default     = 4

  validation {
    condition     = var.cpu_worker_limit >= 1
    error_message = "cpu_worker_limit must be at least 1."
  }
}

variable "cpu_worker_target_cpu_percent" {
  description = "Average CPU use of the CPU worker tasks that autoscaling keeps (target tracking)."
  type        = number
  default     = 60

  validation {
    condition     = var.cpu_worker_target_cpu_percent >= 10 && var.cpu_worker_target_cpu_percent <= 90
    error_message = "cpu_worker_target_cpu_percent must be between 10 and 90."
  }
}

variable "bot_cpu" {
  type    = number
  default = 512
}

variable "bot_memory" {
  type    = number
  default = 1024
}

# --- GPU capacity --------------------------------------------------------------------------

variable "gpu_instance_type" {
  description = "EC2 instance type of the GPU capacity (one GPU per instance, e.g. g5.xlarge, g6.xlarge)."
  type        = string
  default     = "g5.xlarge"
}

variable "gpu_count" {
  description = "Most GPU instances at once; also the encore-gpu work pool's concurrency limit (prefect module)."
  type        = number
  default     = 1

  validation {
    condition     = var.gpu_count >= 1
    error_message = "gpu_count must be at least 1."
  }
}

variable "gpu_task_cpu" {
  description = "CPU units of a GPU task (g5.xlarge has 4096)."
  type        = number
  default     = 3584
}

variable "gpu_task_memory" {
  description = "MiB of a GPU task (g5.xlarge has 16 GiB; leave room for the ECS agent)."
  type        = number
  default     = 14336
}

variable "gpu_root_volume_gb" {
  description = "Root volume of the GPU instances: the GPU image with its baked-in weights is large."
  type        = number
  default     = 100
}

variable "gpu_ami_ssm_parameter" {
  description = "SSM parameter holding the ECS GPU-optimised AMI id."
  type        = string
  default     = "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"
}

variable "log_retention_days" {
  type    = number
  default = 30
}

# --- ECS observer and cost guards -------------------------------------------------------------

variable "observer_retention_seconds" {
  description = "How long ECS task events wait on the observer's queue (an event about a finished run is worthless)."
  type        = number
  default     = 86400
}

variable "alert_email" {
  description = "E-mail address subscribed to the alerts topic (GPU hours, observer dead letters, budget). null: none."
  type        = string
  default     = null
}

variable "gpu_alarm_hours" {
  description = "Alarm when GPU instances have been in service for this many hours without a break."
  type        = number
  default     = 3

  validation {
    condition     = var.gpu_alarm_hours >= 1 && var.gpu_alarm_hours <= 23
    error_message = "gpu_alarm_hours must be between 1 and 23 (CloudWatch evaluates at most one day)."
  }
}

variable "monthly_budget_usd" {
  description = "Monthly AWS budget in USD: a notification at 80 % actual and at 100 % forecast."
  type        = number
  default     = 400

  validation {
    condition     = var.monthly_budget_usd > 0
    error_message = "monthly_budget_usd must be positive."
  }
}
