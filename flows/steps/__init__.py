"""The steps of the jobs, one file each: resolve, separate, convert, remix (a cover); intake,
train, register, preview (a voice).

Each step takes settings, a job id and storage URIs, does its work in the job's scratch folder
through `gpu_worker`, stores what it made and returns URIs. The flows wire them together, as
Prefect tasks made with `step_task`, or inside the heavy-step flows of `flows.heavy`.
"""

from prefect import task
from prefect.cache_policies import NO_CACHE

# A step as a task of its flow: never cached by Prefect (the stems cache is ours), and no
# result persisted (steps return URIs; the files are in storage).
step_task = task(cache_policy=NO_CACHE, persist_result=False)
