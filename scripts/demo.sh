#!/usr/bin/env bash
# The main job of README.md: the local PostgreSQL, cdcd replicating it into the local Kafka, and a
# read_committed consumer (kcat, not cdcd's code) printing what arrived. Every run starts clean.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
eval "$(scripts/stack.sh env)"
DEMO=$CDCD_STACK_DIR/demo
mkdir -p "$DEMO"
PSQL=(psql "$CDCD_STACK_PG_DSN" -v ON_ERROR_STOP=1 -qAt)

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

echo "== cdcd validate -c configs/postgres.yaml"
bin/cdcd validate -c configs/postgres.yaml | sed 's/^/   /'

echo "== cdcd run -c configs/postgres.yaml (log: $DEMO/cdcd.log)"
bin/cdcd run -c configs/postgres.yaml >"$DEMO/cdcd.log" 2>&1 &
CDCD_PID=$!
trap 'kill -TERM $CDCD_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q 'msg=streaming' "$DEMO/cdcd.log" && break; sleep 0.2; done
grep -q 'msg=streaming' "$DEMO/cdcd.log" || { cat "$DEMO/cdcd.log"; exit 1; }

echo "== the workload (scripts/demo/workload.sql)"
"${PSQL[@]}" -f scripts/demo/workload.sql
TARGET=$("${PSQL[@]}" -c "SELECT pg_current_wal_lsn()")
for _ in $(seq 100); do
	[ "$("${PSQL[@]}" -c "SELECT confirmed_flush_lsn >= '$TARGET' FROM pg_replication_slots WHERE slot_name = 'cdcd_demo'")" = t ] && break
	sleep 0.2
done

for t in cdcd.public.customers cdcd.public.orders; do
	echo
	echo "== $t, as a read_committed consumer sees it (kcat): key | value | ordering headers"
	kcat -b "$CDCD_STACK_KAFKA_BROKERS" -C -t "$t" -o beginning -e -q -X isolation.level=read_committed \
		-f '%k | %s | %h\n'
done
echo
echo "== cdcd.demo.commits, the commit stream (one record per Kafka transaction)"
kcat -b "$CDCD_STACK_KAFKA_BROKERS" -C -t cdcd.demo.commits -o beginning -e -q -X isolation.level=read_committed -f '%s\n'

echo
echo "== cdcd tail: the same history through the tcc, whole transactions in source order, each with its bookmark"
bin/cdcd tail -c configs/postgres.yaml --idle-exit 2s | sed 's/^/   /'

echo
echo "== metrics (http://127.0.0.1:9187/metrics)"
curl -fsS http://127.0.0.1:9187/metrics | grep -E '^cdcd_(changes|transactions|kafka_commits)_total' | sed 's/^/   /'

kill -TERM $CDCD_PID
wait $CDCD_PID || true
trap - EXIT
echo
echo "cdcd stopped cleanly; its log is $DEMO/cdcd.log. Stop the servers with: make stack-down"
