# syntax=docker/dockerfile:1
#
# The tunewire GPU server image: `tunewire[server]` with a CUDA build of torch, run as a non-root user.
#
#   docker build -t tunewire:0.1.0 .
#   docker run --gpus all -p 50051:50051 -p 9090:9090 -p 8000:8000 \
#       -v tunewire-data:/data -v tunewire-cache:/cache tunewire:0.1.0
#
# (Without TUNEWIRE_AUTH_TOKENS_FILE or TUNEWIRE_AUTH_TOKENS the server accepts every client; docs/deploy.md.)
#
# Build arguments:
#   CUDA_VERSION     the nvidia/cuda base image's CUDA version; keep it in step with TORCH_INDEX_URL
#   TORCH_VERSION    the torch release to install
#   TORCH_INDEX_URL  the PyTorch wheel index for that CUDA line (cu128 wheels need an NVIDIA driver >= 570)
#   PYTHON_VERSION   the Python that uv installs (a relocatable python-build-standalone build)
#   HF_HUB_OFFLINE   1 to never reach the Hugging Face Hub (models and datasets come from /cache or the data dir);
#                    it is also an ordinary environment variable, so `-e HF_HUB_OFFLINE=1` works at run time

ARG CUDA_VERSION=12.8.1
ARG UBUNTU_VERSION=ubuntu24.04
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# ---------------------------------------------------------------------------------------------------------------
# builder: a Python and a virtual environment under /opt, copied as they are into the runtime stage.
# Built on the runtime's base image, so the C library the wheels are resolved for is the one they run on.
FROM nvidia/cuda:${CUDA_VERSION}-base-${UBUNTU_VERSION} AS builder

ARG PYTHON_VERSION=3.12
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

COPY --from=uv /uv /usr/local/bin/uv

ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    VIRTUAL_ENV=/opt/venv

RUN uv python install "${PYTHON_VERSION}" \
    && uv venv --python "${PYTHON_VERSION}" /opt/venv

# torch first, from the CUDA index, in its own layer: it is by far the largest and changes least often.
# (PyPI's default Linux torch wheel targets the newest CUDA line; naming the index pins the CUDA line.)
RUN uv pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

# Then the project and the rest of its server dependencies from PyPI; torch is already satisfied.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY client/ client/
COPY server/ server/
RUN uv pip install ".[server]" \
    && /opt/venv/bin/python -c "import torch, tunewire, tunewire_server; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

# ---------------------------------------------------------------------------------------------------------------
# runtime: the CUDA user-space runtime (torch's wheels bring their own cuBLAS/cuDNN/NCCL), Python, the venv.
FROM nvidia/cuda:${CUDA_VERSION}-base-${UBUNTU_VERSION} AS runtime

ARG HF_HUB_OFFLINE=0

LABEL org.opencontainers.image.title="tunewire" \
      org.opencontainers.image.description="gRPC fine-tuning service for Hugging Face models (server)" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric UID/GID, so Kubernetes can check runAsNonRoot and volumes can be chowned by fsGroup.
# /data holds the SQLite store and job artifacts; /cache the Hugging Face cache (and other rebuildable caches).
RUN groupadd --system --gid 10001 tunewire \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/tunewire --create-home \
       --shell /usr/sbin/nologin tunewire \
    && mkdir -p /data /cache/huggingface \
    && chown -R 10001:10001 /data /cache

COPY --from=builder /opt/python /opt/python
COPY --from=builder /opt/venv /opt/venv

# Caches go to /cache, scratch to /tmp: with a read-only root filesystem nothing else is writable.
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TUNEWIRE_HOST=0.0.0.0 \
    TUNEWIRE_PORT=50051 \
    TUNEWIRE_DATA_DIR=/data \
    TUNEWIRE_LOG_FORMAT=json \
    HF_HOME=/cache/huggingface \
    HF_HUB_OFFLINE=${HF_HUB_OFFLINE} \
    HF_HUB_DISABLE_TELEMETRY=1 \
    XDG_CACHE_HOME=/cache \
    TRITON_CACHE_DIR=/cache/triton \
    TORCHINDUCTOR_CACHE_DIR=/cache/torchinductor \
    MPLCONFIGDIR=/tmp/matplotlib

USER 10001:10001
WORKDIR /data
VOLUME ["/data", "/cache"]

# 50051: gRPC (TuningService, grpc.health.v1.Health, reflection); 9090: Prometheus metrics;
# 8000: the OpenAI-compatible HTTP face (http_port).
EXPOSE 50051 9090 8000

# The server handles SIGTERM itself: NOT_SERVING, the running job checkpoints and stops, exit within shutdown_grace_s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["tunewire-server"]
CMD []
