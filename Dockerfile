# Build: docker build -t tollgate .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
ENV SQLX_OFFLINE=true
RUN cargo build --release --locked && strip target/release/tollgate

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 tollgate
COPY --from=build /src/target/release/tollgate /usr/local/bin/tollgate
COPY config /etc/tollgate/config
ENV TOLLGATE_CONFIG=/etc/tollgate/config/default.toml \
    TOLLGATE_LISTEN=0.0.0.0:8080
USER tollgate
EXPOSE 8080
ENTRYPOINT ["tollgate"]
CMD ["serve"]
