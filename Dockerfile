# syntax=docker/dockerfile:1
#
# strut's image: `strut serve /model` on port 8080 as a non-root user.
#
#   docker build -t strut .                                    # CPU (the default)
#   docker build -t strut:cuda --build-arg VARIANT=cuda .      # CUDA 13.0, for H100/H200
#   docker build -t strut:cuda-a100 --build-arg VARIANT=cuda --build-arg CUDA_COMPUTE_CAP=80 .
#   docker build -t strut:stream --build-arg MODEL_DIR=models/stream .
#
#   docker run -p 8080:8080 strut                              # the baked-in model
#   docker run -p 8080:8080 -v "$PWD/models/stream:/model:ro" strut
#   docker run --gpus all -p 8080:8080 -v "$PWD/secrets:/secrets:ro" strut:cuda
#
# The final stage is the contract with `strut serve` and with deploy/: the
# environment names, port, paths and probes below are checked against the real
# binary by tests/e2e/container.rs and against the manifests by
# tests/e2e/manifests.rs, so change them together.

ARG VARIANT=cpu
ARG RUST_VERSION=1.95

# ---- toolchain --------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS rust

# ---- build stages, one per variant ------------------------------------------
FROM rust AS build-cpu
ENV STRUT_FEATURES=""

# The CUDA build is CI's (scripts/cuda-build.sh): CUDA 13.0's compiler and
# libraries from PyPI wheels, pinned to what driver 580 loads, so the image
# is built exactly as every CI run builds and links it. candle's kernels are
# compiled for one compute capability (no GPU to ask during `docker build`):
# 80 = A100, 86 = A10G, 89 = L4/L40S, 90 = H100/H200.
FROM rust AS build-cuda
ARG CUDA_COMPUTE_CAP=90
ENV CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP} \
    STRUT_CUDA_CACHE=/opt/strut-cuda \
    STRUT_FEATURES=cuda
# Pinning Debian package versions breaks the build whenever the archive moves
# on; the base image tag is the pin that matters.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/*

# hadolint's "untagged image" check cannot see that these name stages above.
# hadolint ignore=DL3006
FROM build-${VARIANT} AS build
WORKDIR /src
COPY . .
# The registry cache survives rebuilds; target/ is not cached because the two
# variants build on different distributions and must not share build scripts.
# The CUDA libraries the binary links by soname go to /opt/strut-cuda/lib
# for the runtime stage.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    if [ "$STRUT_FEATURES" = cuda ]; then \
      STRUT_CUDA_TARGET=target bash scripts/cuda-build.sh \
      && mkdir -p /opt/strut-cuda/lib \
      && cp -L /opt/strut-cuda/cuda-13.0/lib/python3*/site-packages/nvidia/cu13/lib/lib*.so.* /opt/strut-cuda/lib/; \
    else \
      cargo build --release --locked -p strut; \
    fi \
 && install -m 0755 target/release/strut /usr/local/bin/strut

# ---- runtime stages, one per variant ----------------------------------------
FROM debian:bookworm-slim AS runtime-cpu

# libcudart, cuBLAS, cuRAND and NVRTC from the build's wheels; the driver
# (libcuda) comes from the host through the NVIDIA container toolkit, which
# these two variables ask for.
FROM debian:bookworm-slim AS runtime-cuda
COPY --from=build /opt/strut-cuda/lib/ /usr/local/lib/strut-cuda/
ENV LD_LIBRARY_PATH=/usr/local/lib/strut-cuda \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# hadolint ignore=DL3006
FROM runtime-${VARIANT}
# Which model directory to bake in at /model; mounting a volume there replaces
# it. models/echo is the default model, the same Echo as ./config.yaml.
ARG MODEL_DIR=models/echo
# curl is for the HEALTHCHECK; ca-certificates for models that fetch over TLS.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 strut \
 && useradd --system --uid 10001 --gid strut --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin strut \
 && mkdir -p /model /secrets
COPY --from=build /usr/local/bin/strut /usr/local/bin/strut
# Owned by root and only readable by the server, so a compromised model cannot
# rewrite its own config or weights. No VOLUME for /model or /secrets: a VOLUME
# would make an image built FROM this one silently drop its own COPY into /model,
# and Kubernetes ignores VOLUME anyway; both are plain mount points.
COPY ${MODEL_DIR}/ /model/
# Numeric, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001
# STRUT_SECRETS_DIR is where secrets are mounted, not a secret itself.
# hadolint ignore=DL3064
ENV STRUT_HOST=0.0.0.0 \
    STRUT_PORT=8080 \
    STRUT_SECRETS_DIR=/secrets \
    STRUT_LOG_FORMAT=json
EXPOSE 8080
# Liveness, not readiness: `/` answers from the moment the socket is open, so a
# long weight load does not mark the container unhealthy. The shell expands
# STRUT_PORT, so `-e STRUT_PORT=...` moves the check along with the server;
# `exit 1` because Docker reserves other codes.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["sh", "-c", "curl -fsS http://127.0.0.1:${STRUT_PORT}/ >/dev/null || exit 1"]
# strut is PID 1 in exec form: it handles SIGTERM itself (drains for
# --grace-period, then exits 0), so no init shim is needed.
ENTRYPOINT ["/usr/local/bin/strut", "serve"]
CMD ["/model"]
