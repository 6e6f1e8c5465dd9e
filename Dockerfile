# The release image of enrich: the static binary `make build` makes, on a base with nothing but
# CA certificates, time zone data and a non-root user.
#
#   docker build -t registry.example.com/enrich:1.0.0 \
#     --build-arg VERSION=1.0.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#
# The build is the Makefile's, flag for flag (deploy/build_test.go compares the two lines):
# CGO_ENABLED=0, -trimpath, -buildvcs=true, VERSION linked into main.version, ./cmd/enrich. The build context keeps .git (.dockerignore leaves it
# in, and excludes only files git ignores), so Go stamps the image's binary with the same VCS
# revision, time and "modified" flag as `make build` in the same checkout, and `enrich version`
# says which commit an image runs. From a source tree without .git (a tarball), Go stamps
# nothing and the build still succeeds; from a `git worktree` (where .git is a file pointing
# outside the context) Go stops with "error obtaining VCS status": build from a plain clone.

# Builder: the patched Go that go.mod's toolchain line names (the test checks the two agree).
FROM golang:1.26.11-bookworm AS build
WORKDIR /src
# Modules first, in a layer of their own: a change to the source does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# VERSION is linked into the binary (`enrich version`), as `make build VERSION=...` does.
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=true -ldflags "-X main.version=${VERSION}" -o bin/enrich ./cmd/enrich

# Runtime: distroless static has /etc/ssl/certs/ca-certificates.crt (Green API is https),
# /usr/share/zoneinfo (greenapi.time_zone), /etc/passwd with nonroot = 65532, and no shell.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="enrich" \
      org.opencontainers.image.description="Fills a PostgreSQL table of phone numbers with WhatsApp presence and avatar links from Green API's GetAvatar" \
      org.opencontainers.image.source="https://github.com/enrich-dev/enrich" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /src/bin/enrich /enrich
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
# `--metrics-addr :9090` serves /metrics during a run.
EXPOSE 9090
ENTRYPOINT ["/enrich"]
CMD ["--help"]
