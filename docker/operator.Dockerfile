# llmroute-operator: a static (musl) build, then a distroless runtime as non-root.
# docker build -f docker/operator.Dockerfile -t ghcr.io/llmroute/llmroute-operator:0.1.0 .
FROM rust:1-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl && apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Pure Rust (rustls with ring, protox): no OpenSSL, no system protoc.
RUN cargo build --locked --release --target x86_64-unknown-linux-musl -p llmroute-operator \
 && cp target/x86_64-unknown-linux-musl/release/llmroute-operator /llmroute-operator

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /llmroute-operator /usr/local/bin/llmroute-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/llmroute-operator"]
