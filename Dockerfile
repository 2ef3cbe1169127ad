# syntax=docker/dockerfile:1
#
# One image with every binary of the workspace — `inventory`, `timeline` (API),
# `timeline-worker` (fan-out worker) and `capctl` — in /usr/local/bin.
# docker-compose.yml runs one binary per service from this image.
#
#   chef     Rust toolchain + cargo-chef
#   planner  reduces the workspace to a recipe: manifests, lock file, no code
#   builder  builds the dependencies from the recipe (a layer that survives code
#            edits), then the workspace itself
#   runtime  debian slim, non-root, the binaries and nothing else to speak of
#
# Build: `docker compose build` or `docker build -t cap-services:local .`

ARG RUST_VERSION=1.95
# The builder and the runtime must share a Debian release: the binaries link
# against that release's glibc.
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS chef
ARG CARGO_CHEF_VERSION=0.1.78
RUN cargo install cargo-chef --version "${CARGO_CHEF_VERSION}" --locked
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
# Queries are plain runtime sqlx queries; if compile-time checked ones appear,
# their metadata must come from a committed .sqlx/ directory, never from a live
# database during `docker build`.
ENV SQLX_OFFLINE=true
COPY --from=planner /src/recipe.json recipe.json
# --workspace in both steps: cargo unifies features across the packages it
# builds, so the cooked dependencies match the final build exactly.
RUN cargo chef cook --release --locked --workspace --recipe-path recipe.json
COPY . .
# Every bin target of the workspace ends up at the top of target/release; copy
# them all so a new binary needs no change here. (Migrations are embedded in the
# binaries at compile time, which is why migrations/ is in the build context.)
RUN cargo build --release --locked --workspace \
    && mkdir /out \
    && find target/release -maxdepth 1 -type f -executable -exec cp {} /out/ \;

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates for TLS to managed stores; curl for the compose healthchecks
# (GET /readyz), since the services ship no HTTP client of their own.
# Versions are not pinned: a slim image should take Debian's security updates,
# and pinned Debian revisions disappear from the mirror, breaking the build.
# /keys: the mount point of compose's auth-keys volume, owned by the service
# user; a fresh named volume takes this ownership, so `capctl dev-keys` can
# write the development key pair there.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 cap \
    && useradd --system --uid 10001 --gid cap --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin cap \
    && install -d -o 10001 -g 10001 -m 0755 /keys
COPY --from=builder /out/ /usr/local/bin/
WORKDIR /app
USER 10001:10001
# inventory, timeline, timeline-worker (its /healthz, /readyz and /metrics).
EXPOSE 8081 8082 8083
# Compose names the binary per service; on its own the image explains itself.
CMD ["capctl", "--help"]
