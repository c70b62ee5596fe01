# The app image: bots, Prefect server and workers (CPU steps: ffmpeg remix, delivery, the
# parent flows). No CUDA. Build from the repository root, tagged with the git revision (the
# ECR repository is IMMUTABLE, see infra/terraform/README.md):
#   docker build -f infra/docker/app.Dockerfile \
#     --build-arg TORCH_INDEX_URL=<PyTorch's CPU-only wheel index> \
#     -t encore-app:$(git rev-parse --short=12 HEAD) .
# torch: the default Linux wheel is the CUDA build (gigabytes of CUDA libraries Fargate cannot
# use). The CPU build comes from PyTorch's own CPU wheel index, named by the build argument;
# the build stops if it is missing or if the installed torch is a CUDA build.
FROM python:3.11-slim-bookworm

ARG TORCH_INDEX_URL=""
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 HF_HUB_OFFLINE=1
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg libgoogle-perftools4 \
 && rm -rf /var/lib/apt/lists/*
# Dependencies first (they change rarely), then the code.
RUN test -n "$TORCH_INDEX_URL" || { echo "Pass --build-arg TORCH_INDEX_URL=<PyTorch's CPU-only wheel index>."; exit 1; } \
 && pip install --index-url "$TORCH_INDEX_URL" "torch==2.13.0" \
 && python -c "import sys, torch; sys.exit('torch is a CUDA build; use the CPU-only index' if torch.version.cuda else 0)"
WORKDIR /src
COPY pyproject.toml ./
# prefect-aws, pinned: the worker type of the encore-gpu pool (prefect worker start --type
# ecs) and its ECS observer, configured by infra/terraform (observer.tf).
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt "prefect-aws==0.7.12" && rm /tmp/requirements.txt
COPY README.md LICENSE ./
COPY gpu_worker gpu_worker
COPY flows flows
COPY bots bots
RUN pip install --no-deps . \
 && useradd --create-home --uid 10001 encore
USER 10001
