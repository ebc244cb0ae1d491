# syntax=docker/dockerfile:1
# strut as a container: `docker build -t strut .` then
# `docker run -p 8080:8080 -v $PWD/models/echo:/model strut`.
# The model directory is /model (baked in below, or mounted over), secrets
# are files under /secrets, the server listens on 8080.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p strut \
 && cp target/release/strut /usr/local/bin/strut

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --no-create-home strut \
 && mkdir -p /model /secrets \
 && chown strut:strut /model /secrets
COPY --from=build /usr/local/bin/strut /usr/local/bin/strut
COPY --chown=strut:strut config.yaml /model/config.yaml
USER strut
ENV STRUT_HOST=0.0.0.0 \
    STRUT_PORT=8080 \
    STRUT_SECRETS_DIR=/secrets \
    STRUT_LOG_FORMAT=json
EXPOSE 8080
VOLUME ["/secrets"]
HEALTHCHECK --interval=10s --timeout=2s --start-period=5s \
  CMD curl -fsS http://127.0.0.1:8080/ >/dev/null || exit 1
ENTRYPOINT ["strut", "serve"]
CMD ["/model"]
