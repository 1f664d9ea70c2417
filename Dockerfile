# syntax=docker/dockerfile:1
# The bestmatch service (and its batch jobs), in two flavours from one file:
#   docker build -t bestmatch:cpu .                              slim, ONNX Runtime on CPU
#   docker build --build-arg FLAVOR=cuda -t bestmatch:cuda .     CUDA + cuDNN from the `gpu`
#                                                                extra's wheels; run with --gpus
# Configuration is the BESTMATCH_* environment (README, "Configuration"); BESTMATCH_WORKERS
# sets the uvicorn worker processes. Runs as the unprivileged user bestmatch (uid 10001).
ARG FLAVOR=cpu
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS source
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app app
COPY bestmatch bestmatch
COPY feature_jobs feature_jobs
COPY training training
COPY devstack devstack

# The linux wheel set pulls onnxruntime-gpu; the CPU image swaps it for the smaller CPU
# build (same module, CPU provider only).
FROM source AS venv-cpu
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir ".[jobs]" \
    && /opt/venv/bin/pip uninstall --yes onnxruntime-gpu \
    && /opt/venv/bin/pip install --no-cache-dir "onnxruntime>=1.18"

FROM source AS venv-cuda
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir ".[jobs,gpu]"

# A build stage of this file, not an image, so it has no tag:
# hadolint ignore=DL3006
FROM venv-${FLAVOR} AS venv

FROM ${PYTHON_IMAGE} AS service
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    BESTMATCH_HOST=0.0.0.0 \
    BESTMATCH_PORT=8000 \
    BESTMATCH_WORKERS=2 \
    BESTMATCH_MODELS_DIR=/srv/models \
    BESTMATCH_MODEL_NAME=ltr \
    BESTMATCH_MODEL_VERSION=latest \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
RUN useradd --system --uid 10001 --home-dir /srv --shell /usr/sbin/nologin bestmatch
COPY --from=venv /opt/venv /opt/venv
WORKDIR /srv
COPY models models
USER 10001
EXPOSE 8000
# Healthy when /readyz answers 200: ready, or degraded (Redis down, answers with priors).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 CMD ["python", "-c", \
    "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('BESTMATCH_PORT', '8000'), timeout=2)"]
CMD ["bestmatch", "serve"]
