# Keel: one static binary in a distroless image, run as a non-root user,
# data in the /data volume.
#
#   docker build -t keel .
#   docker run -p 1109:1109 -v keel-data:/data -e KEEL_TOKENS='s3cret@admin' keel
#
# The node listens on 0.0.0.0 inside the container, so it needs tokens
# (KEEL_TOKENS or --tokens-file); it refuses to start without them.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The Makefile's build: static, trimmed, with the linker flag giouring needs.
RUN make build VERSION=$(git describe --always --dirty 2>/dev/null || echo docker) && mkdir -p /out/data && cp bin/keel /out/keel

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/keel /keel
# The volume's mount point, owned by the image's non-root user (65532).
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
VOLUME ["/data"]
EXPOSE 1109
ENV KEEL_HOST=0.0.0.0 KEEL_DATA=/data KEEL_PORT=1109
# /ready is 200 once the node serves (recovered, a leader known, no
# storage fault); keel ready exits 0 then, 1 otherwise.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 CMD ["/keel", "ready", "--url", "http://127.0.0.1:1109"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/keel"]
CMD ["serve"]
