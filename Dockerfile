# syntax=docker/dockerfile:1
#
# Vigil on Debian with Debian's chromium. Build (BuildKit, the default since
# Docker 23) and run:
#
#   docker build -t vigil .
#   docker run -d --name vigil --hostname vigil -p 8517:8517 \
#     -e VIGIL_API_TOKEN="$(openssl rand -hex 32)" \
#     -v vigil-data:/var/lib/vigil vigil
#
# See README.md, "Running as a service". The image layout keeps the shipped
# policy files true as written (their plugin paths are relative to them):
#
#   /usr/local/bin/vigil
#   /etc/vigil/vigil.toml            examples/docker/vigil.toml; mount your own
#   /opt/vigil/policies/*.toml       plugin = "../target/plugins/<name>.wasm"
#   /opt/vigil/target/plugins/*.wasm built by scripts/build-plugins.sh
#   /var/lib/vigil                   data_dir (profiles): the volume

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---- build: the plugins (wasm32-wasip2) and vigil, in release -------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
# Cache mounts keep crates and build output between image builds; the
# results are copied out of the cached target/ in the same step (after
# clearing target/plugins, so a plugin removed from the repo is not shipped).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    rm -rf target/plugins \
 && scripts/build-plugins.sh \
 && cargo build --release --locked -p vigil \
 && mkdir -p /out/plugins \
 && cp target/release/vigil /out/vigil \
 && cp target/plugins/*.wasm /out/plugins/

# ---- runtime --------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim

# chromium: the sessions' browser. ca-certificates: https to web apps,
# object stores and webhooks. fonts-liberation: readable text in
# screenshots (chromium only recommends it). curl: the HEALTHCHECK.
# tini: PID 1, so browser processes orphaned by a crash are reaped; it
# forwards SIGTERM to vigil alone, which closes its browsers itself.
# Not pinned: chromium gets security updates often, and Debian drops the
# versions they replace; rebuild the image to take them.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      chromium ca-certificates fonts-liberation curl tini \
 && rm -rf /var/lib/apt/lists/*

# A fixed numeric id, so Kubernetes' runAsNonRoot can check it and a
# volume's ownership survives image rebuilds.
RUN useradd --system --uid 10001 --user-group --create-home \
      --home-dir /home/vigil --shell /usr/sbin/nologin vigil \
 && install -d -o vigil -g vigil -m 0750 /var/lib/vigil \
 && install -d -m 0755 /etc/vigil /opt/vigil/target/plugins

COPY --from=build /out/vigil /usr/local/bin/vigil
COPY --from=build /out/plugins/ /opt/vigil/target/plugins/
COPY policies/ /opt/vigil/policies/
COPY examples/docker/vigil.toml /etc/vigil/vigil.toml

# Chromium writes a little outside its profile (~/.cache, ~/.config): HOME
# must be writable.
ENV HOME=/home/vigil
USER 10001:10001
WORKDIR /var/lib/vigil
VOLUME ["/var/lib/vigil"]

# The admin API; examples/docker/vigil.toml listens on 0.0.0.0:8517, which
# needs a token (VIGIL_API_TOKEN or [api] token_file). /healthz needs none.
EXPOSE 8517
# On SIGTERM Vigil closes each browser and takes the shutdown backup: give
# `docker stop` time for it (`docker stop -t 120`, or stop_grace_period).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8517/healthz"]

ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/vigil"]
CMD ["run", "--config", "/etc/vigil/vigil.toml"]
