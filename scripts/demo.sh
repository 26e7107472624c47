#!/usr/bin/env bash
# The main job of README.md: the local servers, the demo schema, and cdcd checked against them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
eval "$(scripts/stack.sh env)"

PSQL=(psql "$CDCD_PG_DSN" -v ON_ERROR_STOP=1 -qAt)
"${PSQL[@]}" -f scripts/demo/schema.sql

echo
echo "== cdcd validate -c configs/postgres.yaml"
bin/cdcd validate -c configs/postgres.yaml

cat <<MSG

The servers are up on loopback:
  PostgreSQL  $CDCD_PG_DSN
  MariaDB     mysql://$CDCD_MYSQL_USER:$CDCD_MYSQL_PASSWORD@$CDCD_MYSQL_ADDR/$CDCD_MYSQL_DB
  Kafka       $CDCD_KAFKA_BROKERS
  Registry    $CDCD_REGISTRY_URL

Replication itself (cdcd run) is not implemented yet; see README.md for what works today.
Stop the servers with: make stack-down
MSG
