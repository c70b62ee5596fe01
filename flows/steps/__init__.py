"""The steps of a cover, one file each: resolve, separate, convert, remix.

Each step takes settings, a job id and storage URIs, does its work in the job's scratch folder
through `gpu_worker`, stores what it made and returns URIs. The flows wire them together.
"""
