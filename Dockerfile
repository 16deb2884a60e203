# syntax=docker/dockerfile:1
#
# portent as a static binary in a distroless image (about the binary's size; no shell, no
# package manager, runs as uid 65532).
#
#   docker build -t portent .
#   docker run --rm -p 9099:9099 -v $PWD/examples:/etc/portent:ro portent check /etc/portent/kubernetes.yaml
#
# The binary is linked statically against musl, so the final stage needs no libc. Built for
# the platform of the build (docker buildx --platform linux/amd64,linux/arm64 builds each
# natively or under emulation); no cross linker is involved.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
# musl-tools: the C parts of the dependency tree (aws-lc-sys, ring) are compiled with cc for
# the musl target.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/*
RUN rustup target add "$(uname -m)-unknown-linux-musl"
WORKDIR /src
COPY . .
# The registry and target caches survive between builds (BuildKit); the binary is copied out
# of the cached target directory, which later stages cannot see.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(uname -m)-unknown-linux-musl" \
    && export TARGET_CC=musl-gcc \
    && cargo build --release --locked -p portent --target "$target" \
    && cp "target/$target/release/portent" /portent \
    && strip /portent \
    && /portent --version \
    && mkdir /state

# Distroless static: CA certificates (for https sources and outputs), /etc/passwd with the
# nonroot user, tzdata; nothing else.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /portent /usr/local/bin/portent
# The state directory the Helm chart and the manifests mount a volume on; owned by nonroot so
# that a plain `docker run` (an anonymous volume) can write it too.
COPY --from=build --chown=65532:65532 /state /var/lib/portent
USER 65532:65532
VOLUME ["/var/lib/portent"]
EXPOSE 9099
ENTRYPOINT ["/usr/local/bin/portent"]
CMD ["serve", "/etc/portent/portent.yml"]
