# syntax=docker/dockerfile:1
#
# modelgate images. Two targets share one build stage layout:
#   gateway  (default, last stage)  the serving gateway: base dependencies only, no torch
#   loadtest                         Locust with the project's `loadtest` extra, for compose's loadtest profile
# Both install the project the way the README does: `pip install -c constraints.txt ...`.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---------------------------------------------------------------- build stages
FROM ${PYTHON_IMAGE} AS build-base
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# A virtual environment is the unit copied into the runtime stage: no compilers or pip caches follow it.
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY modelgate/ modelgate/
COPY service/ service/
COPY training/ training/
COPY loadtests/ loadtests/

FROM build-base AS gateway-build
# Base dependencies of pyproject.toml only: the gateway never imports torch.
RUN pip install -c constraints.txt .

FROM build-base AS loadtest-build
# The `loadtest` extra brings the dataset packages of the held-out payloads (`data`), not torch.
RUN pip install -c constraints.txt '.[loadtest]'

# ---------------------------------------------------------------- runtime base
FROM ${PYTHON_IMAGE} AS runtime-base
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A fixed numeric uid/gid lets Kubernetes' runAsNonRoot verify the user without a passwd lookup.
RUN groupadd --system --gid 10001 modelgate \
    && useradd --system --uid 10001 --gid modelgate --no-create-home --home-dir /nonexistent modelgate
WORKDIR /app

# ---------------------------------------------------------------- loadtest target
FROM runtime-base AS loadtest
COPY --from=loadtest-build /opt/venv /opt/venv
COPY loadtests/ loadtests/
# Where the master writes its CSV statistics; a named volume mounted here inherits this owner.
RUN mkdir /reports && chown 10001:10001 /reports
USER 10001:10001
EXPOSE 8089 5557
ENTRYPOINT ["locust"]
CMD ["--help"]

# ---------------------------------------------------------------- gateway target (default)
FROM runtime-base AS gateway
COPY --from=gateway-build /opt/venv /opt/venv
# Settings (env prefix MODELGATE_, see service/settings.py). The model repository is mounted at /models:
# the gateway reads preprocessing.json, labels and tokenizers from it, Triton reads the ONNX files.
# An empty OTLP endpoint: request tracing off (docs/tracing.md).
ENV MODELGATE_HOST=0.0.0.0 \
    MODELGATE_PORT=8080 \
    MODELGATE_GRPC_PORT=8081 \
    MODELGATE_WORKERS=1 \
    MODELGATE_MODEL_REPOSITORY=/models \
    MODELGATE_TRITON_URL=triton:8001 \
    MODELGATE_OTLP_ENDPOINT="" \
    MODELGATE_GRPC_MAX_CONNECTION_AGE_S=2 \
    NUMBA_CACHE_DIR=/tmp/numba-cache
# NUMBA_CACHE_DIR: the OOD score's compiled loops are cached there after the first start of a
# container (the installed package is not writable by the gateway's user); without any writable
# place they are compiled on every start (~2 s) and the gateway still starts.
USER 10001:10001
EXPOSE 8080 8081
# Liveness of the process only; readiness (Triton reachable, models loaded) is /readyz.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('MODELGATE_PORT', '8080') + '/healthz', timeout=2)"]
ENTRYPOINT ["modelgate"]
CMD ["serve"]
