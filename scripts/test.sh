#!/usr/bin/env bash
# Everything the project checks, against the real servers: formatting, vet, and every Go test with
# the race detector. Starts (and installs, when missing) the servers first, so it runs on a fresh
# machine; run twice, it passes twice.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v go >/dev/null || { echo "Go is not installed; cdcd needs Go 1.26 or newer" >&2; exit 1; }
command -v gcc >/dev/null || { echo "installing gcc for the race detector" >&2; apt-get install -y -qq gcc >/dev/null 2>&1; }

started=$SECONDS
scripts/stack.sh up
eval "$(scripts/stack.sh env)"
echo "[test] servers ready in $((SECONDS - started))s"

# Interop tests read cdcd's Avro records with Confluent's own Python client, from a project-local
# virtualenv (PyPI's confluent-kafka with its Avro and schema registry extras).
PYENV=$CDCD_STACK_DIR/python
if ! "$PYENV/bin/python" -c 'import confluent_kafka.schema_registry, fastavro' 2>/dev/null; then
	echo "[test] installing confluent-kafka into $PYENV"
	python3 -m venv "$PYENV"
	"$PYENV/bin/pip" install -q "confluent-kafka[avro,schemaregistry]==2.16.1" >"$CDCD_STACK_DIR/pip.log" 2>&1 ||
		{ echo "pip failed; see $CDCD_STACK_DIR/pip.log" >&2; exit 1; }
fi

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.stack/*'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change:" >&2
	echo "$unformatted" >&2
	exit 1
fi
echo "[test] gofmt, go vet, build"
go vet ./...
go build -o bin/cdcd ./cmd/cdcd
# CI runs the tcc's randomized model longer, and fuzzes it and the parsers for a while.
if [ -n "${CI:-}" ] && [ "${CI}" != false ]; then
	export CDCD_TEST_TCC_MODEL_RUNS=${CDCD_TEST_TCC_MODEL_RUNS:-20000}
fi
# gotestsum prints each test as it ends (so a long suite shows how far it got) and a summary of
# passed, failed and skipped tests. The end-to-end suite crashes and restarts the shared servers, so
# it runs alone, after the rest.
echo "[test] unit, golden, model and server tests of every package but internal/e2e"
go tool gotestsum --format testname --format-hide-empty-pkg -- -race -count=1 -timeout 20m $(go list ./... | grep -v /internal/e2e)
echo "[test] internal/e2e: cdcd as a process against PostgreSQL and Kafka (about 10 minutes)"
go tool gotestsum --format testname -- -race -count=1 -timeout 45m ./internal/e2e
# The three-node cluster runs only for its own tests, so that its brokers do not compete for the
# cores with the rest of the suite.
echo "[test] internal/e2e TestCluster*: the secured three-node Kafka cluster"
scripts/stack.sh up kafka-cluster
cluster_logs=$(mktemp -d)
CDCD_TEST_LOG_DIR=$cluster_logs CDCD_TEST_CLUSTER=1 go tool gotestsum --format testname --jsonfile "$cluster_logs/go-test.json" -- \
	-race -count=1 -timeout 30m -run '^TestCluster' ./internal/e2e
scripts/stack.sh down kafka-cluster
# Every log the cluster tests' processes wrote, and their own output: the password is in none.
password=$CDCD_STACK_KAFKA_CLUSTER_PASSWORD
[ -n "$password" ] && [ "$(find "$cluster_logs" -name '*.log' | wc -l)" -gt 0 ] || { echo "[test] no cluster test logs to search" >&2; exit 1; }
if grep -rlF -- "$password" "$cluster_logs"; then
	echo "[test] the Kafka password appears in the files above" >&2
	exit 1
fi
echo "[test] the Kafka password appears in none of $(find "$cluster_logs" -type f | wc -l) log files of the cluster tests"
rm -rf "$cluster_logs"
if [ -n "${CI:-}" ] && [ "${CI}" != false ]; then
	# Budgets in executions, not seconds (about the seconds noted, on this machine): Go 1.26's fuzz
	# coordinator can report "context deadline exceeded" when a -fuzztime duration ends while a
	# worker is mid-run (golang/go#75804, fixed in Go 1.27), failing a run that found nothing.
	fuzz() { go test -run '^$' -fuzz "^$1\$" -fuzztime "$2" "$3"; }
	fuzz FuzzModel 110000x ./tcc                       # 45 s
	fuzz FuzzParseConsumer 190000x ./bookmark           # 10 s
	fuzz FuzzDecodeArray 170000x ./capture/postgres     # 10 s
	fuzz FuzzDecodeMessage 320000x ./capture/postgres   # 20 s
	fuzz FuzzDecodeText 50000x ./capture/postgres       # 10 s
	fuzz FuzzDecodeBinary 150000x ./capture/postgres    # 10 s
	fuzz FuzzRowMessagesAsPglogrepl 200000x ./capture/postgres  # 10 s
	fuzz FuzzParseCommitRecord 180000x ./bookmark       # 10 s
	fuzz FuzzConsumerBinary 160000x ./bookmark          # 10 s
	fuzz FuzzOrderingHeaders 130000x ./tcc              # 10 s
	fuzz FuzzAppendString 120000x ./kcop                # 10 s
	fuzz FuzzParsePosition 180000x ./capture/mysql      # 10 s
fi
echo "[test] done in $((SECONDS - started))s"
