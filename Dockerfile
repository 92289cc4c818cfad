# Builds the `sigil` binary and ships it in a minimal non-root image:
#   docker build -t sigil .
# The build stage runs the very command .ci/run runs (the manifest test
# `dockerfile_build_stage_commands_are_ci_commands_and_runtime_is_non_root`
# checks that each RUN here is a command line of .ci/run), so what CI
# builds and tests is what the image ships.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p sigil-cli

# distroless/cc: glibc and libgcc (ring links them), no shell, no package
# manager. The deploy/ manifests run it as uid 65532 with a read-only root
# filesystem; it needs no writable path unless a config points at one.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/sigil /usr/local/bin/sigil
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/sigil"]
