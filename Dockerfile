# Duet in a container: `docker compose up` (docker-compose.yml) runs it with
# MinIO for media. Build stage on the Go toolchain the project uses; the
# binary is static (no cgo), so the runtime stage is a slim Debian with CA
# certificates only.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/duet .

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
	&& rm -rf /var/lib/apt/lists/* \
	&& useradd --system --uid 10001 --home-dir /data duet \
	&& mkdir /data && chown duet /data
COPY --from=build /out/duet /usr/local/bin/duet
USER duet
VOLUME /data
# Listen on all interfaces inside the container; compose publishes the ports.
# Media links must name a host devices reach: set DUET_MEDIA_URL to it
# (duet refuses a wildcard HTTP address without one; docs/media.md).
ENV DUET_DATA=/data \
	DUET_MQTT=0.0.0.0:1883 \
	DUET_WS=0.0.0.0:8083 \
	DUET_HTTP=0.0.0.0:8080 \
	DUET_MEDIA_URL=http://localhost:8080
EXPOSE 1883 8083 8080
ENTRYPOINT ["duet"]
CMD ["serve"]
