# CPU image of the service (issue 5 adds the multi-stage build, the CUDA image and a
# compose file). Not built in CI: no Docker engine runs where this project is developed.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    BESTMATCH_HOST=0.0.0.0 BESTMATCH_PORT=8000 BESTMATCH_WORKERS=2 \
    BESTMATCH_MODELS_DIR=/srv/models
WORKDIR /srv
COPY pyproject.toml README.md ./
COPY app app
COPY bestmatch bestmatch
COPY feature_jobs feature_jobs
COPY training training
COPY devstack devstack
RUN pip install --no-cache-dir . && useradd --system --uid 10001 bestmatch
COPY models models
USER bestmatch
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD python -c \
    "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"
CMD ["bestmatch", "serve"]
