# devops-callbacks: one binary on debian:bookworm-slim. It links only glibc (libc, libm,
# libgcc_s); SQLite and the TLS library are compiled in.
#
#   docker build -t devops-callbacks .
#   docker run -p 8080:8080 -e SERVICE_TOKEN=... -e DATABASE_URL=postgres://... devops-callbacks
#
# Without DATABASE_URL the service uses SQLite in /var/lib/devops-callbacks/devops-callbacks.db:
# mount a volume there (owned by uid 10001) to keep it.

ARG RUST_VERSION=1

FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /build

# Dependencies first, in their own layer, reused until Cargo.toml or Cargo.lock change: build
# them against stub sources, then drop the stub crate's own artifacts so the real build below
# recompiles it whatever the file times are.
COPY Cargo.toml Cargo.lock ./
# Cargo.toml names the bench-only programs as examples; cargo wants their files to exist.
COPY bench/*.rs ./bench/
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin devops-callbacks \
    && cargo clean --release --package devops-callbacks \
    && rm -rf src

# The migrations are embedded at compile time by sqlx::migrate!, so they are needed here only.
COPY migrations ./migrations
COPY src ./src
RUN cargo build --release --locked --bin devops-callbacks


FROM debian:bookworm-slim

# ca-certificates: the delivery client verifies HTTPS callback URLs against the system roots.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 devops-callbacks \
    && useradd --system --uid 10001 --gid devops-callbacks --no-create-home \
        --home-dir /var/lib/devops-callbacks --shell /usr/sbin/nologin devops-callbacks \
    && install -d -m 0750 -o devops-callbacks -g devops-callbacks /var/lib/devops-callbacks

COPY --from=builder /build/target/release/devops-callbacks /usr/local/bin/devops-callbacks

# The working directory is where the default SQLite file (and any .env) is looked for.
WORKDIR /var/lib/devops-callbacks
USER 10001:10001

ENV LISTEN_ADDR=0.0.0.0:8080
EXPOSE 8080

# Probes http://LISTEN_ADDR/healthz, with 0.0.0.0 mapped to 127.0.0.1; it gives up after 3 s.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["devops-callbacks", "healthcheck"]

ENTRYPOINT ["devops-callbacks"]
CMD ["serve"]
