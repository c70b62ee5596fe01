# Work pools. Their names are the ones Encore uses (flows/settings.py: ENCORE_CPU_POOL,
# ENCORE_GPU_POOL). The workers that serve them run as ECS services (../aws/ecs.tf) and wait
# until these pools exist.
#
# Deployments are not declared here: `encore deploy` (Python) creates them, with their
# parameters, schedules (the trending drop's cron) and job variables, from the same code
# that defines the flows, so they cannot drift from it. Run it after this module.
#
# No global concurrency limit is declared for the GPU: a limit taken inside a running GPU
# task keeps an instance billed while it waits. The GPU pool's own concurrency limit holds
# flow runs back before any task starts instead.

data "prefect_worker_metadata" "defaults" {}

# Light steps (remix, delivery) and the parent flows, run as subprocesses of the workers. The
# concurrency limit bounds the whole pool (all CPU worker tasks together); each worker task also
# runs at most cpu_worker_limit at once (--limit, ../aws/ecs.tf), and the CPU worker service
# scales on CPU. Runs beyond the limit wait in Prefect, as queued runs, not as processes.
resource "prefect_work_pool" "cpu" {
  name              = "encore-cpu"
  type              = "process"
  description       = "Encore: light steps and parent flows (process worker on Fargate)"
  paused            = false
  concurrency_limit = var.cpu_concurrency
  base_job_template = data.prefect_worker_metadata.defaults.base_job_configs.process
}

# Separation, voice conversion and training: one ECS task of the GPU task definition per
# flow run, placed on the GPU capacity provider (which starts an instance when needed).
resource "prefect_work_pool" "gpu" {
  name              = "encore-gpu"
  type              = "ecs"
  description       = "Encore: GPU steps (ECS tasks on the EC2 GPU capacity provider)"
  paused            = false
  concurrency_limit = var.gpu_count
  base_job_template = local.gpu_base_job_template
}

locals {
  # The ECS worker's job template, cut down to what a fixed task definition needs. It names the
  # task definition FAMILY, so ECS runs its latest revision: an apply of the AWS module with a
  # new image needs no change here. The worker registers nothing (its IAM role may not).
  #
  # task_start_timeout_seconds and task_watch_poll_interval are gone: prefect-aws 0.7 ignores
  # them. Crashed and never-started GPU tasks are reported by the worker's ECS observer
  # (EventBridge -> SQS, ../aws/observer.tf); Encore bounds how long it waits for a GPU step
  # itself.
  gpu_base_job_template = jsonencode({
    job_configuration = {
      command                         = "{{ command }}"
      env                             = "{{ env }}"
      labels                          = "{{ labels }}"
      name                            = "{{ name }}"
      cluster                         = "{{ cluster }}"
      container_name                  = "{{ container_name }}"
      task_definition_arn             = "{{ task_definition }}"
      configure_cloudwatch_logs       = "{{ configure_cloudwatch_logs }}"
      stream_output                   = "{{ stream_output }}"
      match_latest_revision_in_family = false
      auto_deregister_task_definition = false
      task_run_request = {
        cluster                  = "{{ cluster }}"
        taskDefinition           = "{{ task_definition }}"
        capacityProviderStrategy = "{{ capacity_provider_strategy }}"
        tags                     = "{{ labels }}"
        overrides = {
          containerOverrides = [{
            name        = "{{ container_name }}"
            command     = "{{ command }}"
            environment = "{{ env }}"
          }]
        }
      }
    }
    variables = {
      type        = "object"
      description = "Variables of an Encore GPU flow run on ECS."
      properties = {
        command = {
          type        = "string"
          title       = "Command"
          description = "The flow run's command; leave empty for Prefect's own."
        }
        env = {
          type                 = "object"
          title                = "Environment variables"
          description          = "Added to the task's environment (the task definition holds the rest)."
          additionalProperties = { type = "string" }
        }
        labels = {
          type                 = "object"
          title                = "Labels"
          description          = "Tags of the ECS task."
          additionalProperties = { type = "string" }
        }
        name = {
          type  = "string"
          title = "Name"
        }
        cluster = {
          type    = "string"
          title   = "Cluster"
          default = var.cluster
        }
        container_name = {
          type    = "string"
          title   = "Container name"
          default = "prefect"
        }
        task_definition = {
          type        = "string"
          title       = "Task definition family"
          description = "The GPU task definition family made by infra/terraform/aws (resourceRequirements GPU = 1); ECS runs its latest revision."
          default     = var.gpu_task_family
        }
        capacity_provider_strategy = {
          type        = "array"
          title       = "Capacity provider strategy"
          description = "The EC2 GPU capacity provider, which scales from zero."
          items       = { type = "object" }
          default     = [{ capacityProvider = var.gpu_capacity_provider, weight = 1, base = 0 }]
        }
        configure_cloudwatch_logs = {
          type        = "boolean"
          title       = "Configure CloudWatch logs"
          description = "The task definition already sends logs to CloudWatch."
          default     = false
        }
        stream_output = {
          type    = "boolean"
          title   = "Stream output"
          default = false
        }
      }
    }
  })
}
