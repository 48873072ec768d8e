# discord-bot-backend as a container: one static binary in an empty image.
#
#   docker build -t discord-bot-backend .
#   docker run --rm -p 3000:3000 -v dbb-data:/data --env-file discord-bot-backend.env --stop-timeout 25 discord-bot-backend
#
# Without the builder image (offline, or a binary you already trust), build the
# same final image around the binary of `make static`; the builder stage is
# then skipped, so nothing is pulled:
#
#   make static && docker build --target prebuilt -t discord-bot-backend .
#
# Nothing but the binary is in the image. TLS to Discord needs no CA bundle:
# ureq's default `rustls` feature verifies against the Mozilla roots compiled
# in (webpki-roots). DNS reads /etc/resolv.conf and /etc/hosts, which the
# container runtime mounts.

ARG RUST_VERSION=1.95
ARG TARGET=x86_64-unknown-linux-musl

# The runtime settings, shared by both final stages.
FROM scratch AS base
# Inside a container the service must listen on every interface; the port is
# published with `-p`.
ENV HOST=0.0.0.0 \
    PORT=3000
EXPOSE 3000
# Sessions survive a restart in /data, a volume: mount one there (`-v
# dbb-data:/data`), or the runtime makes an anonymous one per container.
# The directory belongs to the service's user, as a fresh volume copies it.
ENV DATA_DIR=/data
COPY --chown=65534:65534 deploy/data-volume.txt /data/README.txt
VOLUME /data
# nobody:nogroup by number: a scratch image has no /etc/passwd.
USER 65534:65534
# SIGTERM drains in-flight requests for up to --upstream-timeout +
# --max-ratelimit-wait + 1 s (21 s by default): stop with `--stop-timeout 25`
# or `docker stop -t 25`, since Docker's default of 10 s would cut it short.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/discord-bot-backend"]

# `--target prebuilt`: the binary from `make static` in the build context
# (.dockerignore lets exactly that one file of target/ through). It comes
# before the builder, so even the classic builder stops here without pulling.
FROM base AS prebuilt
ARG TARGET
COPY target/${TARGET}/release/discord-bot-backend /discord-bot-backend

FROM rust:${RUST_VERSION}-bookworm AS builder
ARG TARGET
# ring (under rustls) compiles C, so the musl target needs musl-gcc.
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add ${TARGET}
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target ${TARGET} --bin discord-bot-backend \
    && cp target/${TARGET}/release/discord-bot-backend /discord-bot-backend

# The default (last) stage.
FROM base AS runtime
COPY --from=builder /discord-bot-backend /discord-bot-backend
