# syntax=docker/dockerfile:1
#
# The acr image: the `acr` binary on Debian 12 (bookworm), as user 65532.
#
#   docker build -t registry.example.com/acr:0.1.0 .
#   mkdir -p acr && cp lib/kubernetes/mirror.runmd acr/
#   # edit acr/mirror.runmd: the upstreams and the store (`: .cache /var/lib/acr/cache` for a
#   # local one; keep `: .cache-dir /var/lib/acr/cache` for an S3 store's local tier)
#   docker run --rm -p 8578:8578 -v "$PWD/acr:/etc/acr:ro" -v acr-state:/var/lib/acr \
#     registry.example.com/acr:0.1.0
#
# The default command runs the pipeline at /etc/acr/mirror.runmd, where the Kubernetes
# manifests (lib/kubernetes) mount theirs, read-only, and writes the hosts.toml files of
# `.mirror` to /var/lib/acr/hosts.d. The pipeline's `+ .proxy` must listen on 0.0.0.0 to be
# reached from outside the container. Everything acr writes goes where the pipeline says: the
# store where `: .cache DIR` or `: .cache-dir DIR` puts it (without either, `cache/` beside the
# pipeline file, which then must be writable by uid 65532), so /etc/acr may be read-only.
# Mount a directory rather than the single file: acr reloads the pipeline when the file
# changes, and a single-file bind mount does not show a file that an editor replaced.
#
# No HEALTHCHECK: the image has no HTTP client to ask GET /healthz with, and orchestrators
# probe it themselves (the manifests use /healthz and /readyz on port 8578).

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin acr \
    && install -m 0755 target/release/acr /usr/local/bin/acr

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 65532 acr \
    && useradd --system --uid 65532 --gid 65532 --home-dir /var/lib/acr --no-create-home \
         --shell /usr/sbin/nologin acr \
    && install -d -o 65532 -g 65532 -m 0750 /etc/acr /var/lib/acr
COPY --from=builder /usr/local/bin/acr /usr/local/bin/acr
USER 65532:65532
WORKDIR /var/lib/acr
ENV HOME=/var/lib/acr
EXPOSE 8578
ENTRYPOINT ["acr"]
CMD ["--runmd-path", "/etc/acr/mirror.runmd", "mirror", "start", "--hosts-dir", "/var/lib/acr/hosts.d"]
