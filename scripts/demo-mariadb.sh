#!/usr/bin/env bash
# The MariaDB variant of the main job: the local MariaDB, cdcd replicating it into the local Kafka
# (configs/mariadb.yaml), and `cdcd tail` (the tcc) printing the transactions. Every run starts clean.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
eval "$(scripts/stack.sh env)"
DEMO=$CDCD_STACK_DIR/demo-mariadb
mkdir -p "$DEMO"
SQL=(mariadb --no-defaults -h 127.0.0.1 -P "${CDCD_STACK_MYSQL_ADDR##*:}" -u "$CDCD_STACK_MYSQL_USER" -p"$CDCD_STACK_MYSQL_PASSWORD" "$CDCD_STACK_MYSQL_DB")

echo "== resetting the demo (tables, topics)"
"${SQL[@]}" <<'SQL'
DROP TABLE IF EXISTS orders, customers;
CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL, credit DECIMAL(12,2) NOT NULL DEFAULT 0);
CREATE TABLE orders (id BIGINT UNSIGNED PRIMARY KEY, customer INT NOT NULL, total DECIMAL(12,2) NOT NULL,
  placed TIMESTAMP(3) NOT NULL, status ENUM('new', 'paid', 'shipped') NOT NULL);
INSERT INTO customers VALUES (1, 'already there before cdcd started', 100);
SQL
for t in cdcd.mariadb.commits cdcd.mariadb.customers cdcd.mariadb.orders; do
	java -cp "$CDCD_STACK_DIR/kafka/lib/*" org.apache.kafka.tools.TopicCommand --bootstrap-server "$CDCD_STACK_KAFKA_BROKERS" \
		--delete --if-exists --topic "$t" >/dev/null 2>&1 || true
done

echo "== cdcd validate -c configs/mariadb.yaml"
bin/cdcd validate -c configs/mariadb.yaml | sed 's/^/   /'

echo "== cdcd run -c configs/mariadb.yaml (log: $DEMO/cdcd.log)"
bin/cdcd run -c configs/mariadb.yaml >"$DEMO/cdcd.log" 2>&1 &
CDCD=$!
trap 'kill $CDCD 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q 'msg=streaming' "$DEMO/cdcd.log" && break; sleep 0.2; done
grep -q 'msg=streaming' "$DEMO/cdcd.log" || { tail -20 "$DEMO/cdcd.log"; exit 1; }

echo "== three transactions committed on MariaDB"
"${SQL[@]}" <<'SQL'
BEGIN; INSERT INTO customers VALUES (2, 'Ada', 0);
  INSERT INTO orders VALUES (18446744073709551615, 2, 19.90, NOW(3), 'new'); COMMIT;
BEGIN; UPDATE orders SET status = 'paid' WHERE id = 18446744073709551615;
  UPDATE customers SET credit = credit - 19.90 WHERE id = 2; COMMIT;
DELETE FROM customers WHERE id = 1;
SQL
sleep 2

echo "== cdcd tail -c configs/mariadb.yaml: the snapshot and the transactions, whole, in commit order (GTIDs)"
timeout 5 bin/cdcd tail -c configs/mariadb.yaml | sed 's/^/   /' || true
kill -TERM $CDCD && wait $CDCD || true
trap - EXIT
echo "== cdcd stopped cleanly; run again and it resumes after the commit stream's last record"
