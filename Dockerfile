# poisonscan image: `--target cpu` (API, migrations, CPU worker) or `--target gpu` (GPU worker).

# ---- base: shared runtime layer for every stage ------------------------------
FROM python:3.11-slim AS base
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Fixed UID so files in the shared /data volume keep one owner across images.
RUN groupadd --system --gid 10001 poisonscan \
 && useradd --system --uid 10001 --gid poisonscan --home-dir /srv/poisonscan --shell /usr/sbin/nologin poisonscan \
 && mkdir -p /srv/poisonscan /data \
 && chown poisonscan:poisonscan /srv/poisonscan /data
WORKDIR /srv/poisonscan

# ---- builder: CPU dependencies into a self-contained venv ---------------------
FROM base AS builder
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Metadata first, sources after, so the layer order matches how often they change.
COPY pyproject.toml README.md alembic.ini ./
COPY app/ app/
COPY worker/ worker/
COPY migrations/ migrations/
RUN pip install --upgrade pip && pip install .

# ---- builder-gpu: same, plus the `gpu` extra (tensorflow[and-cuda]) -----------
# TensorFlow pulls the CUDA/cuDNN libraries as pip wheels, so no nvidia/cuda base
# image is needed; the host only has to provide the driver (NVIDIA container toolkit).
FROM builder AS builder-gpu
RUN pip install ".[gpu]"

# ---- cpu: API, migrate, CPU worker -------------------------------------------
FROM base AS cpu
COPY --from=builder /opt/venv /opt/venv
# Sources stay next to alembic.ini so `poisonscan migrate` finds migrations/.
COPY --chown=poisonscan:poisonscan alembic.ini ./
COPY --chown=poisonscan:poisonscan app/ app/
COPY --chown=poisonscan:poisonscan worker/ worker/
COPY --chown=poisonscan:poisonscan migrations/ migrations/
ENV PATH=/opt/venv/bin:$PATH \
    POISONSCAN_DATA_DIR=/data
# /data is created (and chowned) in base, so a fresh named volume inherits that owner.
VOLUME /data
USER poisonscan
EXPOSE 8000
# Plain urllib: slim has no curl/wget. Workers override this in compose.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["poisonscan", "api", "--host", "0.0.0.0", "--port", "8000"]

# ---- gpu: GPU worker ---------------------------------------------------------
FROM base AS gpu
COPY --from=builder-gpu /opt/venv /opt/venv
COPY --chown=poisonscan:poisonscan alembic.ini ./
COPY --chown=poisonscan:poisonscan app/ app/
COPY --chown=poisonscan:poisonscan worker/ worker/
COPY --chown=poisonscan:poisonscan migrations/ migrations/
ENV PATH=/opt/venv/bin:$PATH \
    POISONSCAN_DATA_DIR=/data \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
VOLUME /data
USER poisonscan
# One task at a time: a single process owns the GPU's memory.
CMD ["poisonscan", "worker", "--queues", "gpu", "--concurrency", "1"]
