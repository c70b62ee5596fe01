# The app image: bots, Prefect server and workers (CPU steps: ffmpeg remix, delivery, the
# parent flows). No CUDA. Build from the repository root:
#   docker build -f infra/docker/app.Dockerfile -t encore-app .
# torch: the default Linux wheel is the CUDA build (several GB). For a small image, point pip
# at a CPU-only wheel index with --build-arg PIP_EXTRA_INDEX_URL=<index>.
FROM python:3.11-slim-bookworm

ARG PIP_EXTRA_INDEX_URL=""
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 HF_HUB_OFFLINE=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg libgoogle-perftools4 \
 && rm -rf /var/lib/apt/lists/*
RUN pip install "torch==2.13.0"
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY gpu_worker gpu_worker
COPY flows flows
COPY bots bots
# prefect-aws: the worker type of the encore-gpu pool (prefect worker start --type ecs).
RUN pip install . "prefect-aws>=0.5"
RUN useradd --create-home encore
USER encore
