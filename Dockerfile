# cdcd as a static, non-root container image.
# A static binary cannot load Go plugins (-buildmode=plugin needs cgo and the same toolchain); build
# custom KCOPs into the binary for this image, or use a cgo build with a matching base image.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/cdcd ./cmd/cdcd

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/cdcd /usr/local/bin/cdcd
COPY configs/ /etc/cdcd/
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/cdcd"]
CMD ["--help"]
