# syntax=docker/dockerfile:1
#
# Container image of helpdesk-mail-operator.
#
#   docker build -t helpdesk-mail-operator:0.1.0 .
#
# Build stage: the release binary from the locked dependency set. The cache mounts keep the
# crate registry and target directory between builds (BuildKit).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release --bin helpdesk-mail-operator \
    && install -D -m 0555 target/release/helpdesk-mail-operator /out/helpdesk-mail-operator

# Runtime stage: glibc and CA certificates only; no shell, no package manager. The image's
# user is 65532 (nonroot), the UID the Helm chart runs as with a read-only root filesystem.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="helpdesk-mail-operator" \
      org.opencontainers.image.description="Keeps helpdesk tenants' mail deliverable by verifying SPF and DMARC alignment" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/helpdesk-mail-operator /usr/local/bin/helpdesk-mail-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/helpdesk-mail-operator"]
CMD ["run"]
