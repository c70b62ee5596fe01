output "work_pools" {
  description = "Work pool names (ENCORE_CPU_POOL, ENCORE_GPU_POOL)."
  value       = { cpu = prefect_work_pool.cpu.name, gpu = prefect_work_pool.gpu.name }
}
