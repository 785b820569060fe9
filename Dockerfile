# syntax=docker/dockerfile:1
#
# One image, one binary: `splitscope controller` and `splitscope agent` both run from it.
# Built by `cargo xtask image` (docker build -t splitscope:dev .) and loaded into kind by
# `cargo xtask kind-up`.

# --- build -----------------------------------------------------------------------------------
# Debian bookworm, like the runtime base below, so the binary links against the same glibc.
FROM rust:1.95-bookworm AS builder

# clang compiles the BPF C sources (-target bpf, CO-RE) in ebpf-probes' build script, which
# embeds the object in the binary; llvm provides llvm-strip, libbpf-dev the bpf_helpers headers.
# It must include every package of the Build set in xtask/src/deps.rs (an xtask test checks).
RUN apt-get update \
    && apt-get install -y --no-install-recommends clang llvm libbpf-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# The caches keep crates and incremental artefacts between image builds; the binary is copied
# out of the cached target dir in the same step because cache mounts are not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p splitscope \
    && install -D -m 0755 target/release/splitscope /out/splitscope

# --- run -------------------------------------------------------------------------------------
# distroless/cc: glibc + libgcc and nothing else (no shell, no package manager).
FROM gcr.io/distroless/cc-debian12:nonroot

COPY --from=builder /out/splitscope /usr/local/bin/splitscope

# 65532 is distroless' `nonroot`. The controller runs as this user. The agent's DaemonSet
# overrides it to uid 0 with only CAP_BPF and CAP_PERFMON: Kubernetes grants added capabilities
# to a non-root uid in the bounding set only, not in the effective set (that would need ambient
# capabilities, which Kubernetes does not set), so a non-root agent could not call bpf(2).
USER 65532:65532

EXPOSE 8080 9102
ENTRYPOINT ["/usr/local/bin/splitscope"]
CMD ["--help"]
