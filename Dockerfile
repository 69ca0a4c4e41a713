# Build: docker build -t tollgate .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
ENV SQLX_OFFLINE=true
RUN cargo build --release --locked && strip target/release/tollgate

FROM debian:bookworm-slim
# libssl3: the database driver's TLS is OpenSSL's (as libpq's), so that sslmode=prefer
# connects to a Citus node's self-signed certificate (docs/SCALING.md).
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 tollgate
COPY --from=build /src/target/release/tollgate /usr/local/bin/tollgate
COPY config /etc/tollgate/config
ENV TOLLGATE_CONFIG=/etc/tollgate/config/default.toml \
    TOLLGATE_LISTEN=0.0.0.0:8080
USER tollgate
EXPOSE 8080
ENTRYPOINT ["tollgate"]
CMD ["serve"]
