# One image for both roles: the API (default CMD) and the Celery worker (`gcn worker`).
#
#   docker build -t generative-convnet:cpu .                              # CPU torch (default)
#   docker build --build-arg TORCH_VARIANT=cu128 -t generative-convnet:cu128 .   # CUDA torch
#
# TORCH_VARIANT names a PyTorch wheel index (https://download.pytorch.org/whl/<variant>):
# `cpu`, or a CUDA build such as `cu126` / `cu128`; it must be one that publishes
# torch==TORCH_VERSION. torch is installed from that index first; `pip install .` then finds the
# pin already satisfied (a local label such as +cpu or +cu128 matches ==2.13.0) and leaves it alone.
# Everything is fetched at build time; the container downloads nothing when it runs.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

# torch first, in a layer of its own: the largest download, and it changes only with the ARGs.
RUN case "$TORCH_VARIANT" in \
        cpu|cu[0-9]*|rocm[0-9]*) ;; \
        *) echo "TORCH_VARIANT must be cpu or a CUDA index such as cu128, not '$TORCH_VARIANT'" >&2; exit 2 ;; \
    esac \
 && pip install --index-url "${TORCH_INDEX_URL}/${TORCH_VARIANT}" "torch==${TORCH_VERSION}" \
 && python -c "import sys, torch; v = torch.__version__; print('torch', v); \
sys.exit(0 if v == '${TORCH_VERSION}+${TORCH_VARIANT}' else 'expected torch ${TORCH_VERSION}+${TORCH_VARIANT}, got ' + v)"

# The project itself (with the PostgreSQL driver: compose keeps the job table on PostgreSQL).
COPY . /src
RUN pip install "/src[postgres]" \
 && python -c "import sys, torch; v = torch.__version__; \
sys.exit(0 if v == '${TORCH_VERSION}+${TORCH_VARIANT}' else 'pip install . replaced torch with ' + v)"

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG TORCH_VARIANT=cpu
ARG GCN_UID=10001
ARG GCN_GID=10001

LABEL org.opencontainers.image.title="generative-convnet" \
      org.opencontainers.image.description="Generative ConvNet service: API and GPU worker" \
      org.opencontainers.image.licenses="MIT" \
      io.gcn.torch-variant="${TORCH_VARIANT}"

# An unprivileged user and the data directory it owns. Declared as a VOLUME below, so a fresh
# named volume mounted at /data starts out with this owner.
RUN groupadd --system --gid "${GCN_GID}" gcn \
 && useradd --system --uid "${GCN_UID}" --gid gcn --home-dir /home/gcn --create-home \
            --shell /usr/sbin/nologin gcn \
 && mkdir -p /data \
 && chown gcn:gcn /data

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GCN_DATA_DIR=/data \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# Fails the build, not the first request, when the installed command cannot even start.
RUN gcn --help > /dev/null

WORKDIR /home/gcn
USER ${GCN_UID}:${GCN_GID}
VOLUME ["/data"]
EXPOSE 8000

# For the API. A worker container has no HTTP server: compose disables this check for it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]

CMD ["gcn", "serve", "--workers", "0", "--host", "0.0.0.0", "--port", "8000"]
