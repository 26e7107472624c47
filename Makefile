# The two commands of README.md are `make demo` and `make test`; the rest are their parts.
SHELL := /bin/bash
GO ?= go

.PHONY: demo demo-mariadb test stack stack-down stack-status build unit lint bench

## demo: bring up the servers it needs (PostgreSQL and Kafka) and run cdcd's main job against them
demo: build
	scripts/stack.sh up postgres kafka
	scripts/demo.sh

## demo-mariadb: the same job from MariaDB: cdcd replicating the local MariaDB into Kafka, shown by `cdcd tail`
demo-mariadb: build
	scripts/stack.sh up mariadb kafka
	scripts/demo-mariadb.sh

## test: bring the servers up, then run every test (race detector on) against them
test:
	scripts/test.sh

## stack: install (when missing) and start PostgreSQL, MariaDB, Kafka and the schema registry
stack:
	scripts/stack.sh up

stack-down:
	scripts/stack.sh down

stack-status:
	scripts/stack.sh status

## build: bin/cdcd with cgo, so that it can load KCOP plugins (build them with -trimpath too)
build:
	CGO_ENABLED=1 $(GO) build -trimpath -o bin/cdcd ./cmd/cdcd
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/cdcd-demo ./cmd/cdcd-demo

## unit: the tests that need no server (the others skip when the stack is down)
unit:
	$(GO) test -race -count=1 ./...

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

## bench: end-to-end throughput and memory against the local servers (results: docs/benchmarks.md)
bench: build stack
	eval "$$(scripts/stack.sh env)" && $(GO) run ./cmd/cdcd-bench
