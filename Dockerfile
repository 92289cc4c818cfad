# Builds the `sigil` binary and ships it in a minimal image.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p sigil-cli

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/sigil /usr/local/bin/sigil
ENTRYPOINT ["/usr/local/bin/sigil"]
