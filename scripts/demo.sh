#!/usr/bin/env bash
# The main job of README.md: the local PostgreSQL, cdcd replicating it into the local Kafka, and a
# read_committed consumer (kcat, not cdcd's code) printing what arrived. Every run starts clean.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
eval "$(scripts/stack.sh env)"
DEMO=$CDCD_STACK_DIR/demo
mkdir -p "$DEMO"
PSQL=(psql "$CDCD_STACK_PG_DSN" -v ON_ERROR_STOP=1 -qAt)
export PGOPTIONS='-c client_min_messages=warning' # no NOTICEs from the reset

echo "== resetting the demo (tables, slot, publication, topics)"
"${PSQL[@]}" <<'SQL'
SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'cdcd_demo' AND NOT active;
DROP PUBLICATION IF EXISTS cdcd_demo;
DROP TABLE IF EXISTS public.orders, public.customers;
SQL
"${PSQL[@]}" -f scripts/demo/schema.sql
for t in cdcd.demo.commits cdcd.public.customers cdcd.public.orders; do
	java -cp "$CDCD_STACK_DIR/kafka/lib/*" org.apache.kafka.tools.TopicCommand --bootstrap-server "$CDCD_STACK_KAFKA_BROKERS" \
		--delete --if-exists --topic "$t" >/dev/null 2>&1 || true
done
"${PSQL[@]}" -c "INSERT INTO customers (id, name) VALUES (0, 'already there before cdcd started')"
rm -f "$DEMO/cdcd.log"

echo "== cdcd validate -c configs/postgres.yaml: every prerequisite, each missing one with its fix"
bin/cdcd validate -c configs/postgres.yaml | sed 's/^/   /'

# The proof: cdcd runs, a workload commits while cdcd is killed with SIGKILL, and the history read
# back through the tcc is compared with what PostgreSQL committed (cmd/cdcd-demo).
bin/cdcd-demo -cdcd bin/cdcd -config configs/postgres.yaml -log "$DEMO/cdcd.log"

echo
echo "== what a plain read_committed consumer (kcat, not cdcd's code) reads: the first records of cdcd.public.orders"
echo "   key | value (a Debezium-like envelope) | ordering headers (transaction, commit position, operation, group)"
kcat -b "$CDCD_STACK_KAFKA_BROKERS" -C -t cdcd.public.orders -o beginning -c 2 -e -q -X isolation.level=read_committed \
	-f '%k | %s | %h\n' | sed 's/^/   /'
echo "== the commit stream's first record: a commit group, its transactions and where their records are"
kcat -b "$CDCD_STACK_KAFKA_BROKERS" -C -t cdcd.demo.commits -o beginning -c 1 -e -q -X isolation.level=read_committed -f '%s\n' |
	cut -c1-400 | sed 's/^/   /'
echo "== cdcd tail: the last transaction through the tcc, whole, with its bookmark (resume any consumer from one)"
bin/cdcd tail -c configs/postgres.yaml --idle-exit 2s | tail -n 6 | cut -c1-300 | sed 's/^/   /'
echo
echo "cdcd's log is $DEMO/cdcd.log. Stop the servers with: make stack-down"
