#!/usr/bin/env bash
# The real servers cdcd runs and is tested against, on loopback, with their data under $CDCD_STACK_DIR
# (default: .stack in the repository, git-ignored):
#   postgres  PostgreSQL from Debian's packages, wal_level=logical, role `cdc` with REPLICATION;
#             ssl=on with a certificate for `localhost` from the stack's local CA ($STACK/tls/ca.pem),
#             so clients may use sslmode=disable or sslmode=verify-full (see `env`)
#   mariadb   MariaDB from Debian's packages, ROW binlog with full image and metadata, GTID strict mode
#   kafka     Apache Kafka, single-node KRaft, from its Maven Central jars (deploy/kafka/pom.xml)
#   registry  Apicurio Registry (Confluent-compatible API under /apis/ccompat/v7), from Maven Central
#   kafka-cluster  three KRaft nodes from the same jars, replication factor 3, min.insync.replicas 2,
#             unclean leader election off; each node has a PLAINTEXT listener and a SASL_SSL one
#             (TLS with a certificate from the stack's local CA, SCRAM-SHA-256/512 users);
#             not started by default: `scripts/stack.sh up kafka-cluster`
#
# Usage: scripts/stack.sh up|down|status|env|install [service...]   (no service: all of them)
#        scripts/stack.sh crash postgres|mariadb|kafka   (an immediate stop / SIGKILL, for fault tests)
#        scripts/stack.sh crash-node N   (SIGKILL node N of kafka-cluster; `up kafka-cluster` restarts it)
#        scripts/stack.sh mariadb-admin 'SQL'   (run SQL as MariaDB's root, e.g. SET GLOBAL ...)
# Every step is idempotent: `up` installs what is missing, initialises what is new, starts what is
# stopped and waits until each server answers. Ports and credentials come from the environment.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK=${CDCD_STACK_DIR:-$ROOT/.stack}

PG_PORT=${CDCD_STACK_PG_PORT:-15432}
PG_USER=${CDCD_STACK_PG_USER:-cdc}
PG_PASSWORD=${CDCD_STACK_PG_PASSWORD:-cdc}
PG_DB=${CDCD_STACK_PG_DB:-cdcd}
MY_PORT=${CDCD_STACK_MYSQL_PORT:-13306}
MY_USER=${CDCD_STACK_MYSQL_USER:-cdc}
MY_PASSWORD=${CDCD_STACK_MYSQL_PASSWORD:-cdc}
MY_DB=${CDCD_STACK_MYSQL_DB:-cdcd}
MY_SERVER_ID=${CDCD_STACK_MYSQL_SERVER_ID:-1}
KAFKA_PORT=${CDCD_STACK_KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${CDCD_STACK_KAFKA_CONTROLLER_PORT:-19093}
KAFKA_HEAP=${CDCD_STACK_KAFKA_HEAP:-1g}
REGISTRY_PORT=${CDCD_STACK_REGISTRY_PORT:-18081}
APICURIO_VERSION=${CDCD_STACK_APICURIO_VERSION:-3.3.3}
# kafka-cluster: node N listens on CLUSTER_PORT+N (PLAINTEXT), CLUSTER_PORT+10+N (SASL_SSL, clients),
# CLUSTER_PORT+20+N (SASL_SSL, between brokers) and CLUSTER_PORT+30+N (KRaft controller).
CLUSTER_PORT=${CDCD_STACK_KAFKA_CLUSTER_PORT:-19190}
CLUSTER_HEAP=${CDCD_STACK_KAFKA_CLUSTER_HEAP:-512m}
CLUSTER_USER=${CDCD_STACK_KAFKA_CLUSTER_USER:-cdcd}
CLUSTER_PASSWORD=${CDCD_STACK_KAFKA_CLUSTER_PASSWORD:-cdcd-cluster-secret}

ALL_SERVICES=(postgres mariadb kafka registry)

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

# wait_for DESCRIPTION SECONDS COMMAND...: polls COMMAND once a second until it succeeds.
wait_for() {
	local what=$1 secs=$2
	shift 2
	local i
	for ((i = 0; i < secs; i++)); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 1
	done
	return 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# port_free SERVICE PORT VAR: before starting a server, make sure nothing else holds its port.
port_free() {
	if port_open "$2"; then
		die "$1: port $2 is taken by another process (another checkout's stack?); stop it, or choose another port with $3"
	fi
}

# stop_pid PID SECONDS: SIGTERM, then SIGKILL if it is still there after SECONDS.
stop_pid() {
	local pid=$1 secs=$2 i
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < secs; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 1
	done
	kill -KILL "$pid" 2>/dev/null || true
}

# progress WHAT LOG CMD...: runs CMD with its output in LOG, saying every ten seconds that WHAT is
# still under way, so that no download or install stays silent for long.
progress() {
	local what=$1 out=$2 pid i=0
	shift 2
	"$@" >"$out" 2>&1 &
	pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		sleep 1
		i=$((i + 1))
		if ((i % 10 == 0)); then log "$what: still under way (${i}s)"; fi
	done
	wait "$pid"
}

apt_get_install() {
	DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

apt_install() {
	local missing=()
	local p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	[ "$(id -u)" -eq 0 ] || die "need root to install ${missing[*]} (apt-get install ${missing[*]})"
	log "installing ${missing[*]} from Debian's packages (apt-get; its output goes to $STACK/apt.log)"
	mkdir -p "$STACK"
	# The packages' maintainer scripts must not try to start the system-wide services. apt's and
	# debconf's chatter is shown only when something fails.
	if ! progress "installing ${missing[*]}" "$STACK/apt.log" apt_get_install "${missing[@]}"; then
		tail -n 30 "$STACK/apt.log" >&2
		die "apt-get could not install ${missing[*]}; see $STACK/apt.log"
	fi
}

# run_as USER COMMAND...: the database servers refuse to run as root.
run_as() {
	local user=$1
	shift
	if [ "$(id -un)" = "$user" ]; then "$@"; else runuser -u "$user" -- "$@"; fi
}

# ---------------------------------------------------------------- postgres

pg_bindir() {
	local d
	d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
	[ -n "$d" ] || return 1
	echo "$d"
}

postgres_install() { apt_install postgresql postgresql-contrib; }

postgres_up() {
	postgres_install
	local bin data=$STACK/postgres/data sock=$STACK/postgres
	bin=$(pg_bindir) || die "PostgreSQL binaries not found under /usr/lib/postgresql"
	mkdir -p "$sock"
	chown postgres:postgres "$sock"
	chmod 0700 "$sock"
	# The data directory sits below the repository; the postgres user must be able to reach it.
	chmod o+x "$STACK"
	if [ ! -s "$data/PG_VERSION" ]; then
		log "postgres: initdb in $data"
		run_as postgres "$bin/initdb" -D "$data" -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
		cat >>"$data/postgresql.conf" <<-EOF
			# cdcd stack
			listen_addresses = '127.0.0.1'
			port = $PG_PORT
			unix_socket_directories = '$sock'
			wal_level = logical
			max_replication_slots = 32
			max_wal_senders = 32
			max_connections = 200
			fsync = on
			logging_collector = off
		EOF
		cat >"$data/pg_hba.conf" <<-EOF
			local   all          all                      trust
			local   replication  all                      trust
			host    all          all        127.0.0.1/32  scram-sha-256
			host    replication  all        127.0.0.1/32  scram-sha-256
		EOF
	fi
	if ! run_as postgres "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
		port_free postgres "$PG_PORT" CDCD_STACK_PG_PORT
		log "postgres: starting on 127.0.0.1:$PG_PORT"
		run_as postgres "$bin/pg_ctl" -D "$data" -l "$STACK/postgres/server.log" -w -t 60 \
			-o "-p $PG_PORT -k $sock" start >/dev/null ||
			die "postgres did not start; see $STACK/postgres/server.log"
	fi
	wait_for postgres 60 run_as postgres "$bin/pg_isready" -h "$sock" -p "$PG_PORT" ||
		die "postgres is not ready; see $STACK/postgres/server.log"
	local psql=("$bin/psql" -h "$sock" -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qAt)
	run_as postgres "${psql[@]}" -d postgres <<-EOF
		SELECT format('CREATE ROLE %I LOGIN REPLICATION', '$PG_USER')
		 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER') \gexec
		ALTER ROLE "$PG_USER" LOGIN REPLICATION PASSWORD '$PG_PASSWORD';
		SELECT format('CREATE DATABASE %I OWNER %I', '$PG_DB', '$PG_USER')
		 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$PG_DB') \gexec
		SELECT format('CREATE DATABASE %I OWNER %I', '${PG_DB}_target', '$PG_USER')
		 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '${PG_DB}_target') \gexec
	EOF
	postgres_tls "$bin"
	log "postgres: ready at postgres://$PG_USER:***@127.0.0.1:$PG_PORT/$PG_DB (TLS: host=localhost, sslrootcert=$STACK/tls/ca.pem)"
}

pg_ssl_on() {
	[ "$(run_as postgres "$1/psql" -h "$STACK/postgres" -p "$PG_PORT" -U postgres -qAt -d postgres -c 'SHOW ssl')" = on ]
}

# postgres_tls BINDIR: ssl=on with a certificate for `localhost` from the stack's CA. Clients choose:
# sslmode=disable still works, and sslmode=verify-full needs host=localhost and the CA as sslrootcert.
postgres_tls() {
	local bin=$1 dir=$STACK/postgres/tls
	if ! cert_current "$dir" server; then
		issue_cert "$dir" server "DNS:localhost"
		log "postgres: made the server's certificate in $dir (for localhost)"
	fi
	chown -R postgres:postgres "$dir"
	chmod 0600 "$dir/server.key"
	run_as postgres "$bin/psql" -h "$STACK/postgres" -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qAt -d postgres >/dev/null <<-EOF
		ALTER SYSTEM SET ssl_cert_file = '$dir/server.pem';
		ALTER SYSTEM SET ssl_key_file = '$dir/server.key';
		ALTER SYSTEM SET ssl = on;
		SELECT pg_reload_conf();
	EOF
	wait_for "postgres ssl" 30 pg_ssl_on "$bin" || die "postgres did not turn ssl on; see $STACK/postgres/server.log"
}

postgres_down() {
	local bin data=$STACK/postgres/data
	bin=$(pg_bindir) || return 0
	[ -s "$data/PG_VERSION" ] || return 0
	if run_as postgres "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
		log "postgres: stopping"
		run_as postgres "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null
	fi
}

# crash: an immediate stop (no checkpoint; the next start runs crash recovery).
postgres_crash() {
	local bin data=$STACK/postgres/data
	bin=$(pg_bindir) || return 0
	if run_as postgres "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
		log "postgres: stopping in immediate mode"
		run_as postgres "$bin/pg_ctl" -D "$data" -m immediate -w stop >/dev/null
	fi
}

postgres_status() {
	local bin
	bin=$(pg_bindir) || { echo "postgres: not installed"; return 1; }
	if run_as postgres "$bin/pg_isready" -h "$STACK/postgres" -p "$PG_PORT" >/dev/null 2>&1; then
		echo "postgres: up on 127.0.0.1:$PG_PORT"
	else
		echo "postgres: down"
		return 1
	fi
}

# scratch_postgres up|down NAME PORT [setting=value...]: a throwaway cluster under $STACK/scratch/NAME
# for tests that need a server configured wrongly on purpose (e.g. wal_level=replica).
scratch_postgres() {
	local action=${1:-} name=${2:-} port=${3:-}
	[ -n "$action" ] && [ -n "$name" ] || die "usage: scratch-postgres up|down NAME PORT [setting=value...]"
	shift 3 || shift $#
	postgres_install
	local bin dir=$STACK/scratch/$name
	bin=$(pg_bindir) || die "PostgreSQL binaries not found under /usr/lib/postgresql"
	case $action in
	up)
		[ -n "$port" ] || die "scratch-postgres up needs a port"
		mkdir -p "$dir"
		chmod o+x "$STACK" "$STACK/scratch"
		chown postgres:postgres "$dir"
		if [ ! -s "$dir/data/PG_VERSION" ]; then
			run_as postgres "$bin/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
			{
				echo "listen_addresses = '127.0.0.1'"
				echo "port = $port"
				echo "unix_socket_directories = '$dir'"
				local kv
				for kv in "$@"; do echo "${kv%%=*} = '${kv#*=}'"; done
			} >>"$dir/data/postgresql.conf"
			echo "host all all 127.0.0.1/32 scram-sha-256" >>"$dir/data/pg_hba.conf"
		fi
		if ! run_as postgres "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
			run_as postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null ||
				die "scratch postgres $name did not start; see $dir/server.log"
		fi
		run_as postgres "$bin/psql" -h "$dir" -p "$port" -U postgres -qAt -v ON_ERROR_STOP=1 -d postgres <<-EOF
			SELECT 'CREATE ROLE $PG_USER LOGIN REPLICATION' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER') \gexec
			ALTER ROLE "$PG_USER" PASSWORD '$PG_PASSWORD';
			SELECT 'CREATE DATABASE $PG_DB OWNER $PG_USER' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$PG_DB') \gexec
		EOF
		echo "postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$port/$PG_DB?sslmode=disable"
		;;
	down)
		if [ -s "$dir/data/PG_VERSION" ]; then
			run_as postgres "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
		fi
		rm -rf "$dir" "$dir".saved.*
		;;
	save)
		# save NAME COPY: a cold copy of the data directory (slots included), as a backup would be.
		local copy=$port
		[ -n "$copy" ] || die "usage: scratch-postgres save NAME COPY"
		run_as postgres "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
		rm -rf "$dir.saved.$copy"
		cp -a "$dir/data" "$dir.saved.$copy"
		run_as postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null ||
			die "scratch postgres $name did not start; see $dir/server.log"
		;;
	restore)
		# restore NAME COPY: the server is replaced by the saved copy, which recovers as a standby
		# and is promoted: a new timeline, as after a restore or a failover.
		local copy=$port
		[ -d "$dir.saved.$copy" ] || die "scratch postgres $name has no saved copy $copy"
		run_as postgres "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
		rm -rf "$dir/data"
		cp -a "$dir.saved.$copy" "$dir/data"
		run_as postgres touch "$dir/data/standby.signal"
		run_as postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null ||
			die "scratch postgres $name did not start as a standby; see $dir/server.log"
		run_as postgres "$bin/pg_ctl" -D "$dir/data" -w -t 60 promote >/dev/null ||
			die "scratch postgres $name was not promoted; see $dir/server.log"
		;;
	*) die "usage: scratch-postgres up|down|save|restore NAME PORT|COPY [setting=value...]" ;;
	esac
}

# ---------------------------------------------------------------- mariadb

mariadb_install() { apt_install mariadb-server mariadb-client; }

mariadb_client() { mariadb --no-defaults -S "$STACK/mariadb/mysqld.sock" -uroot "$@"; }

mariadb_up() {
	mariadb_install
	local dir=$STACK/mariadb data=$STACK/mariadb/data
	mkdir -p "$dir"
	chmod o+x "$STACK"
	cat >"$dir/my.cnf" <<-EOF
		[mariadbd]
		datadir = $data
		socket = $dir/mysqld.sock
		pid-file = $dir/mysqld.pid
		log-error = $dir/error.log
		bind-address = 127.0.0.1
		port = $MY_PORT
		server_id = $MY_SERVER_ID
		log_bin = $dir/binlog/mariadb-bin
		binlog_format = ROW
		binlog_row_image = FULL
		binlog_row_metadata = FULL
		gtid_strict_mode = ON
		gtid_domain_id = 0
		log_slave_updates = ON
		expire_logs_days = 7
		character-set-server = utf8mb4
		collation-server = utf8mb4_unicode_ci
		default_time_zone = '+00:00'
		innodb_buffer_pool_size = 256M
		innodb_flush_log_at_trx_commit = 1
		sync_binlog = 1
		skip-name-resolve
	EOF
	mkdir -p "$dir/binlog"
	chown -R mysql:mysql "$dir"
	if [ ! -d "$data/mysql" ]; then
		log "mariadb: initialising $data"
		mariadb-install-db --defaults-file="$dir/my.cnf" --user=mysql --auth-root-authentication-method=socket \
			--skip-test-db >"$dir/install.log" 2>&1 || die "mariadb-install-db failed; see $dir/install.log"
	fi
	if ! mariadb_client -e 'SELECT 1' >/dev/null 2>&1; then
		port_free mariadb "$MY_PORT" CDCD_STACK_MYSQL_PORT
		log "mariadb: starting on 127.0.0.1:$MY_PORT"
		start-stop-daemon --start --background --chuid mysql --pidfile "$dir/mysqld.pid" \
			--exec /usr/sbin/mariadbd -- --defaults-file="$dir/my.cnf"
	fi
	wait_for mariadb 60 mariadb_client -e 'SELECT 1' || die "mariadb is not ready; see $dir/error.log"
	mariadb_client <<-EOF
		CREATE DATABASE IF NOT EXISTS \`$MY_DB\`;
		CREATE DATABASE IF NOT EXISTS \`${MY_DB}_target\`;
		CREATE USER IF NOT EXISTS '$MY_USER'@'127.0.0.1' IDENTIFIED BY '$MY_PASSWORD';
		CREATE USER IF NOT EXISTS '$MY_USER'@'localhost' IDENTIFIED BY '$MY_PASSWORD';
		ALTER USER '$MY_USER'@'127.0.0.1' IDENTIFIED BY '$MY_PASSWORD';
		ALTER USER '$MY_USER'@'localhost' IDENTIFIED BY '$MY_PASSWORD';
		GRANT SELECT, RELOAD, LOCK TABLES, REPLICATION SLAVE, BINLOG MONITOR, REPLICATION SLAVE ADMIN ON *.* TO '$MY_USER'@'127.0.0.1', '$MY_USER'@'localhost';
		GRANT ALL PRIVILEGES ON \`$MY_DB\`.* TO '$MY_USER'@'127.0.0.1', '$MY_USER'@'localhost';
		GRANT ALL PRIVILEGES ON \`${MY_DB}_target\`.* TO '$MY_USER'@'127.0.0.1', '$MY_USER'@'localhost';
	EOF
	log "mariadb: ready at $MY_USER:***@tcp(127.0.0.1:$MY_PORT)/$MY_DB"
}

mariadb_down() {
	local dir=$STACK/mariadb pid
	pid=$(cat "$dir/mysqld.pid" 2>/dev/null) || return 0
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		log "mariadb: stopping"
		stop_pid "$pid" 60
	fi
	rm -f "$dir/mysqld.pid"
}

mariadb_crash() {
	local pid
	pid=$(cat "$STACK/mariadb/mysqld.pid" 2>/dev/null) || return 0
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		log "mariadb: killing (SIGKILL)"
		kill -KILL "$pid" 2>/dev/null || true
		local i
		for ((i = 0; i < 30; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
	fi
	rm -f "$STACK/mariadb/mysqld.pid"
}

mariadb_status() {
	if mariadb_client -e 'SELECT 1' >/dev/null 2>&1; then
		echo "mariadb: up on 127.0.0.1:$MY_PORT"
	else
		echo "mariadb: down"
		return 1
	fi
}

# ---------------------------------------------------------------- kafka

java_check() {
	command -v java >/dev/null || apt_install openjdk-17-jre-headless
	command -v mvn >/dev/null || apt_install maven
}

kafka_install() {
	java_check
	apt_install kcat
	local lib=$STACK/kafka/lib stamp
	stamp=$(sha256sum "$ROOT/deploy/kafka/pom.xml" | cut -c1-16)
	if [ "$(cat "$lib/.pom" 2>/dev/null)" != "$stamp" ]; then
		log "kafka: resolving the broker's jars from Maven Central"
		rm -rf "$lib"
		mkdir -p "$lib"
		progress "kafka: resolving the jars" "$STACK/kafka/mvn.log" mvn -q -B -f "$ROOT/deploy/kafka/pom.xml" \
			dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$lib" ||
			die "maven could not resolve the Kafka jars; see $STACK/kafka/mvn.log"
		echo "$stamp" >"$lib/.pom"
	fi
}

kafka_pid() { cat "$STACK/kafka/kafka.pid" 2>/dev/null; }

# kafka_log4j FILE: the brokers' logging, to server.log in the directory -Dkafka.logs.dir names.
kafka_log4j() {
	cat >"$1" <<-'EOF'
		status = warn
		appender.f.type = File
		appender.f.name = F
		appender.f.fileName = ${sys:kafka.logs.dir}/server.log
		appender.f.layout.type = PatternLayout
		appender.f.layout.pattern = [%d] %p %m (%c)%n
		rootLogger.level = INFO
		rootLogger.appenderRef.f.ref = F
		logger.req.name = kafka.request.logger
		logger.req.level = WARN
	EOF
}

kafka_running() {
	local pid
	pid=$(kafka_pid) && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# kafka_ready: the broker answers metadata requests and lists itself.
kafka_ready() {
	kcat -b "127.0.0.1:$KAFKA_PORT" -L -m 5 2>/dev/null | grep -q "broker 1 at"
}

kafka_up() {
	mkdir -p "$STACK/kafka"
	kafka_install
	local dir=$STACK/kafka cp="$STACK/kafka/lib/*"
	cat >"$dir/server.properties" <<-EOF
		process.roles=broker,controller
		node.id=1
		controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
		listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
		advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
		inter.broker.listener.name=PLAINTEXT
		controller.listener.names=CONTROLLER
		listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
		log.dirs=$dir/data
		num.partitions=1
		offsets.topic.replication.factor=1
		offsets.topic.num.partitions=10
		transaction.state.log.replication.factor=1
		transaction.state.log.min.isr=1
		transaction.state.log.num.partitions=10
		share.coordinator.state.topic.replication.factor=1
		share.coordinator.state.topic.min.isr=1
		group.initial.rebalance.delay.ms=0
		auto.create.topics.enable=true
		transaction.max.timeout.ms=900000
		log.retention.hours=168
	EOF
	kafka_log4j "$dir/log4j2.properties"
	local logopts=(-Dkafka.logs.dir="$dir/logs" -Dlog4j2.configurationFile="$dir/log4j2.properties")
	if [ ! -f "$dir/data/meta.properties" ]; then
		log "kafka: formatting storage in $dir/data"
		local id
		id=$(java "${logopts[@]}" -cp "$cp" kafka.tools.StorageTool random-uuid)
		java "${logopts[@]}" -cp "$cp" kafka.tools.StorageTool format --standalone --ignore-formatted \
			-t "$id" -c "$dir/server.properties" >"$dir/format.log" 2>&1 ||
			die "kafka storage format failed; see $dir/format.log"
	fi
	if ! kafka_running; then
		port_free kafka "$KAFKA_PORT" CDCD_STACK_KAFKA_PORT
		port_free kafka "$KAFKA_CONTROLLER_PORT" CDCD_STACK_KAFKA_CONTROLLER_PORT
		log "kafka: starting on 127.0.0.1:$KAFKA_PORT"
		mkdir -p "$dir/logs"
		# setsid: the broker outlives the shell that started it and ignores its terminal's signals.
		setsid nohup java -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
			-XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 \
			-Djava.awt.headless=true "${logopts[@]}" -cp "$cp" kafka.Kafka "$dir/server.properties" \
			>"$dir/logs/stdout.log" 2>&1 </dev/null &
		echo $! >"$dir/kafka.pid"
	fi
	wait_for kafka 120 kafka_ready || die "kafka is not ready; see $dir/logs/server.log"
	log "kafka: ready at 127.0.0.1:$KAFKA_PORT"
}

kafka_down() {
	kafka_running || { rm -f "$STACK/kafka/kafka.pid"; return 0; }
	local pid
	pid=$(kafka_pid)
	log "kafka: stopping (controlled shutdown)"
	stop_pid "$pid" 60
	rm -f "$STACK/kafka/kafka.pid"
}

# crash: stop at once, as a power cut or kill -9 would (for the fault tests).
kafka_crash() {
	kafka_running || return 0
	log "kafka: killing (SIGKILL)"
	kill -KILL "$(kafka_pid)" 2>/dev/null || true
	local i
	for ((i = 0; i < 30; i++)); do port_open "$KAFKA_PORT" || break; sleep 1; done
	rm -f "$STACK/kafka/kafka.pid"
}

kafka_status() {
	if kafka_ready; then echo "kafka: up on 127.0.0.1:$KAFKA_PORT"; else
		echo "kafka: down"
		return 1
	fi
}

# ---------------------------------------------------------------- kafka-cluster

cluster_nodes=(1 2 3)

cluster_dir() { echo "$STACK/kafka-cluster/node$1"; }
cluster_pid() { cat "$(cluster_dir "$1")/kafka.pid" 2>/dev/null; }
cluster_node_running() {
	local pid
	pid=$(cluster_pid "$1") && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# stack_ca: the local CA that signs the stack's server certificates (the Kafka cluster's brokers and
# PostgreSQL), made once in $STACK/tls.
stack_ca() {
	local dir=$STACK/tls
	[ -f "$dir/ca.pem" ] && [ -f "$dir/ca.key" ] && return 0
	command -v openssl >/dev/null || apt_install openssl
	mkdir -p "$dir"
	log "tls: making a local CA in $dir"
	openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=cdcd stack CA" \
		-keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
}

# cert_current DIR NAME: DIR/NAME.pem and its key exist and the stack's CA verifies the certificate.
cert_current() {
	[ -f "$1/$2.pem" ] && [ -f "$1/$2.key" ] && [ -f "$STACK/tls/ca.pem" ] &&
		openssl verify -CAfile "$STACK/tls/ca.pem" "$1/$2.pem" >/dev/null 2>&1
}

# issue_cert DIR NAME SUBJECT_ALT_NAMES: makes DIR/NAME.pem and DIR/NAME.key, signed by the stack's CA.
issue_cert() {
	local dir=$1 name=$2 san=$3
	stack_ca
	mkdir -p "$dir"
	openssl req -newkey rsa:2048 -nodes -subj "/CN=cdcd stack $name" -keyout "$dir/$name.key" -out "$dir/$name.csr" 2>/dev/null
	printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$san" >"$dir/$name.ext"
	openssl x509 -req -in "$dir/$name.csr" -CA "$STACK/tls/ca.pem" -CAkey "$STACK/tls/ca.key" -CAcreateserial \
		-days 3650 -extfile "$dir/$name.ext" -out "$dir/$name.pem" 2>/dev/null
	rm -f "$dir/$name.csr" "$dir/$name.ext"
}

# cluster_certs: one certificate for every node (127.0.0.1 and localhost), from the stack's CA.
cluster_certs() {
	local dir=$STACK/kafka-cluster/tls
	cert_current "$dir" broker && [ -f "$dir/broker.p12" ] && return 0
	command -v openssl >/dev/null || apt_install openssl
	issue_cert "$dir" broker "IP:127.0.0.1,DNS:localhost"
	log "kafka-cluster: made the brokers' certificate in $dir"
	openssl pkcs12 -export -in "$dir/broker.pem" -inkey "$dir/broker.key" -name broker \
		-passout pass:changeit -out "$dir/broker.p12"
}

cluster_ready() {
	local n
	for n in "${cluster_nodes[@]}"; do
		kcat -b "127.0.0.1:$((CLUSTER_PORT + n))" -L -m 5 2>/dev/null | grep -q "3 brokers" || return 1
	done
}

kafka-cluster_install() { kafka_install; cluster_certs; }

kafka-cluster_up() {
	kafka-cluster_install
	local tls=$STACK/kafka-cluster/tls cp="$STACK/kafka/lib/*" n voters="" id
	for n in "${cluster_nodes[@]}"; do
		voters+="${voters:+,}$n@127.0.0.1:$((CLUSTER_PORT + 30 + n))"
	done
	id=$(cat "$STACK/kafka-cluster/cluster.id" 2>/dev/null || true)
	if [ -z "$id" ]; then
		id=$(java -cp "$cp" kafka.tools.StorageTool random-uuid)
		echo "$id" >"$STACK/kafka-cluster/cluster.id"
	fi
	for n in "${cluster_nodes[@]}"; do
		local dir
		dir=$(cluster_dir "$n")
		mkdir -p "$dir/logs"
		cat >"$dir/server.properties" <<-EOF
			process.roles=broker,controller
			node.id=$n
			controller.quorum.voters=$voters
			listeners=PLAINTEXT://127.0.0.1:$((CLUSTER_PORT + n)),SECURE://127.0.0.1:$((CLUSTER_PORT + 10 + n)),INTERNAL://127.0.0.1:$((CLUSTER_PORT + 20 + n)),CONTROLLER://127.0.0.1:$((CLUSTER_PORT + 30 + n))
			advertised.listeners=PLAINTEXT://127.0.0.1:$((CLUSTER_PORT + n)),SECURE://127.0.0.1:$((CLUSTER_PORT + 10 + n)),INTERNAL://127.0.0.1:$((CLUSTER_PORT + 20 + n))
			listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SECURE:SASL_SSL,INTERNAL:SASL_SSL,CONTROLLER:PLAINTEXT
			inter.broker.listener.name=INTERNAL
			controller.listener.names=CONTROLLER
			sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
			sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
			listener.name.internal.sasl.enabled.mechanisms=SCRAM-SHA-512
			listener.name.internal.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="admin-$CLUSTER_PASSWORD";
			listener.name.secure.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
			listener.name.secure.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
			super.users=User:admin
			ssl.keystore.type=PKCS12
			ssl.keystore.location=$tls/broker.p12
			ssl.keystore.password=changeit
			ssl.key.password=changeit
			ssl.truststore.type=PEM
			ssl.truststore.location=$STACK/tls/ca.pem
			ssl.endpoint.identification.algorithm=https
			log.dirs=$dir/data
			num.partitions=1
			default.replication.factor=3
			min.insync.replicas=2
			unclean.leader.election.enable=false
			offsets.topic.replication.factor=3
			offsets.topic.num.partitions=10
			transaction.state.log.replication.factor=3
			transaction.state.log.min.isr=2
			transaction.state.log.num.partitions=10
			share.coordinator.state.topic.replication.factor=3
			share.coordinator.state.topic.min.isr=2
			group.initial.rebalance.delay.ms=0
			auto.create.topics.enable=true
			transaction.max.timeout.ms=900000
		EOF
		kafka_log4j "$dir/log4j2.properties"
		local logopts=(-Dkafka.logs.dir="$dir/logs" -Dlog4j2.configurationFile="$dir/log4j2.properties")
		if [ ! -f "$dir/data/meta.properties" ]; then
			log "kafka-cluster: formatting node $n"
			java "${logopts[@]}" -cp "$cp" kafka.tools.StorageTool format --ignore-formatted -t "$id" -c "$dir/server.properties" \
				--add-scram "SCRAM-SHA-512=[name=admin,password=admin-$CLUSTER_PASSWORD]" \
				--add-scram "SCRAM-SHA-512=[name=$CLUSTER_USER,password=$CLUSTER_PASSWORD]" \
				--add-scram "SCRAM-SHA-256=[name=$CLUSTER_USER,password=$CLUSTER_PASSWORD]" \
				>"$dir/format.log" 2>&1 || die "kafka-cluster: formatting node $n failed; see $dir/format.log"
		fi
		if ! cluster_node_running "$n"; then
			local p
			for p in $((CLUSTER_PORT + n)) $((CLUSTER_PORT + 10 + n)) $((CLUSTER_PORT + 20 + n)) $((CLUSTER_PORT + 30 + n)); do
				port_free "kafka-cluster node $n" "$p" CDCD_STACK_KAFKA_CLUSTER_PORT
			done
			log "kafka-cluster: starting node $n on 127.0.0.1:$((CLUSTER_PORT + n)) (PLAINTEXT) and :$((CLUSTER_PORT + 10 + n)) (SASL_SSL)"
			setsid nohup java -Xms"$CLUSTER_HEAP" -Xmx"$CLUSTER_HEAP" -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
				-Djava.awt.headless=true "${logopts[@]}" -cp "$cp" kafka.Kafka "$dir/server.properties" \
				>"$dir/logs/stdout.log" 2>&1 </dev/null &
			echo $! >"$dir/kafka.pid"
		fi
	done
	wait_for kafka-cluster 180 cluster_ready || die "kafka-cluster is not ready; see $STACK/kafka-cluster/node*/logs/server.log"
	log "kafka-cluster: ready at $(cluster_brokers PLAINTEXT) (PLAINTEXT) and $(cluster_brokers SECURE) (SASL_SSL)"
}

# cluster_brokers PLAINTEXT|SECURE: the bootstrap list of one listener.
cluster_brokers() {
	local n out="" off=0
	[ "$1" = SECURE ] && off=10
	for n in "${cluster_nodes[@]}"; do out+="${out:+,}127.0.0.1:$((CLUSTER_PORT + off + n))"; done
	echo "$out"
}

kafka-cluster_down() {
	local n
	for n in "${cluster_nodes[@]}"; do
		if cluster_node_running "$n"; then
			log "kafka-cluster: stopping node $n"
			stop_pid "$(cluster_pid "$n")" 60
		fi
		rm -f "$(cluster_dir "$n")/kafka.pid"
	done
}

kafka-cluster_crash() {
	local n
	for n in "${cluster_nodes[@]}"; do cluster_crash_node "$n"; done
}

# cluster_crash_node N: SIGKILL node N.
cluster_crash_node() {
	cluster_node_running "$1" || return 0
	log "kafka-cluster: killing node $1 (SIGKILL)"
	kill -KILL "$(cluster_pid "$1")" 2>/dev/null || true
	local i
	for ((i = 0; i < 30; i++)); do port_open "$((CLUSTER_PORT + $1))" || break; sleep 1; done
	rm -f "$(cluster_dir "$1")/kafka.pid"
}

kafka-cluster_status() {
	local n up=0
	for n in "${cluster_nodes[@]}"; do cluster_node_running "$n" && up=$((up + 1)); done
	if [ "$up" -gt 0 ]; then echo "kafka-cluster: $up of 3 nodes up at $(cluster_brokers PLAINTEXT)"; else
		echo "kafka-cluster: down"
		return 1
	fi
}

# ---------------------------------------------------------------- registry

# registry_java: Apicurio Registry 3.3 is compiled for Java 21; the broker is happy with 17.
registry_java() {
	local j v
	for j in ${CDCD_STACK_REGISTRY_JAVA:-} /usr/lib/jvm/*/bin/java $(command -v java); do
		[ -x "$j" ] || continue
		v=$("$j" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
		if [ "${v%%.*}" -ge 21 ] 2>/dev/null; then
			echo "$j"
			return 0
		fi
	done
	return 1
}

registry_install() {
	java_check
	registry_java >/dev/null || die "the schema registry needs Java 21 or newer and none was found under /usr/lib/jvm (set CDCD_STACK_REGISTRY_JAVA to its java binary)"
	local dir=$STACK/registry
	if [ ! -f "$dir/app/quarkus-run.jar" ] || [ "$(cat "$dir/app/.version" 2>/dev/null)" != "$APICURIO_VERSION" ]; then
		log "registry: resolving Apicurio Registry $APICURIO_VERSION from Maven Central"
		rm -rf "$dir/app"
		mkdir -p "$dir/app"
		# Without a pom, the unpack goal writes its markers under a literal "${project.basedir}" in the
		# working directory (markersDirectory cannot be set from the command line), and skips the
		# unpack while they exist: so it runs inside the stack directory, and they go afterwards.
		rm -rf "$dir/\${project.basedir}"
		(cd "$dir" && progress "registry: resolving Apicurio Registry" "$dir/mvn.log" \
			mvn -q -B org.apache.maven.plugins:maven-dependency-plugin:3.8.1:unpack \
			-Dartifact="io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all" \
			-DoutputDirectory="$dir/unpack") ||
			die "maven could not resolve Apicurio Registry; see $dir/mvn.log"
		rm -rf "$dir/\${project.basedir}"
		local run
		run=$(find "$dir/unpack" -name quarkus-run.jar | head -n 1)
		[ -n "$run" ] || die "quarkus-run.jar not found in the Apicurio archive ($dir/unpack)"
		rm -rf "$dir/app"
		mv "$(dirname "$run")" "$dir/app"
		rm -rf "$dir/unpack"
		echo "$APICURIO_VERSION" >"$dir/app/.version"
	fi
}

registry_ready() { curl -fsS "http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7/subjects" >/dev/null; }

registry_running() {
	local pid
	pid=$(cat "$STACK/registry/registry.pid" 2>/dev/null) && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

registry_up() {
	mkdir -p "$STACK/registry"
	registry_install
	local dir=$STACK/registry
	if ! registry_running; then
		port_free registry "$REGISTRY_PORT" CDCD_STACK_REGISTRY_PORT
		log "registry: starting on 127.0.0.1:$REGISTRY_PORT"
		# In-memory storage: schemas live as long as the process, which is what tests and the demo need.
		local java
		java=$(registry_java)
		setsid nohup "$java" -Xms128m -Xmx384m -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$REGISTRY_PORT" \
			-Dquarkus.log.console.enable=true -jar "$dir/app/quarkus-run.jar" \
			>"$dir/registry.log" 2>&1 </dev/null &
		echo $! >"$dir/registry.pid"
	fi
	wait_for registry 120 registry_ready || die "the schema registry is not ready; see $dir/registry.log"
	log "registry: ready at http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7"
}

registry_down() {
	registry_running || { rm -f "$STACK/registry/registry.pid"; return 0; }
	local pid
	pid=$(cat "$STACK/registry/registry.pid")
	log "registry: stopping"
	stop_pid "$pid" 30
	rm -f "$STACK/registry/registry.pid"
}

registry_status() {
	if registry_ready; then echo "registry: up on 127.0.0.1:$REGISTRY_PORT"; else
		echo "registry: down"
		return 1
	fi
}

# ---------------------------------------------------------------- main

print_env() {
	cat <<-EOF
		export CDCD_STACK_PG_DSN='postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB?sslmode=disable'
		export CDCD_STACK_PG_TARGET_DSN='postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/${PG_DB}_target?sslmode=disable'
		export CDCD_STACK_PG_TLS_DSN='postgres://$PG_USER:$PG_PASSWORD@localhost:$PG_PORT/$PG_DB?sslmode=verify-full&sslrootcert=$STACK/tls/ca.pem'
		export CDCD_STACK_CA_FILE='$STACK/tls/ca.pem'
		export CDCD_STACK_PG_ADMIN_DSN='postgres://postgres@127.0.0.1:$PG_PORT/$PG_DB?host=$STACK/postgres&sslmode=disable'
		export CDCD_STACK_MYSQL_ADDR='127.0.0.1:$MY_PORT'
		export CDCD_STACK_MYSQL_USER='$MY_USER'
		export CDCD_STACK_MYSQL_PASSWORD='$MY_PASSWORD'
		export CDCD_STACK_MYSQL_DB='$MY_DB'
		export CDCD_STACK_KAFKA_BROKERS='127.0.0.1:$KAFKA_PORT'
		export CDCD_STACK_REGISTRY_URL='http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7'
		export CDCD_STACK_DIR='$STACK'
		export CDCD_STACK_KAFKA_CLUSTER_BROKERS='$(cluster_brokers PLAINTEXT)'
		export CDCD_STACK_KAFKA_CLUSTER_SECURE_BROKERS='$(cluster_brokers SECURE)'
		export CDCD_STACK_KAFKA_CLUSTER_CA_FILE='$STACK/tls/ca.pem'
		export CDCD_STACK_KAFKA_CLUSTER_USER='$CLUSTER_USER'
		export CDCD_STACK_KAFKA_CLUSTER_PASSWORD='$CLUSTER_PASSWORD'
	EOF
}

cmd=${1:-status}
shift || true
if [ "$cmd" = mariadb-admin ]; then
	# SQL as MariaDB's root (over the socket), for tests that change server settings or purge binlogs.
	mariadb_client -e "$*"
	exit 0
fi
if [ "$cmd" = crash-node ]; then
	cluster_crash_node "${1:?crash-node needs a node number, 1 to 3}"
	exit 0
fi
if [ "$cmd" = scratch-postgres ]; then
	mkdir -p "$STACK/scratch"
	scratch_postgres "$@"
	exit 0
fi
services=("$@")
if [ ${#services[@]} -eq 0 ]; then
	services=("${ALL_SERVICES[@]}")
	# A plain `down` stops the cluster too, when it runs.
	[ "$cmd" = down ] && services=(kafka-cluster "${services[@]}")
fi
for s in "${services[@]}"; do
	case " ${ALL_SERVICES[*]} kafka-cluster " in *" $s "*) ;; *) die "unknown service '$s' (known: ${ALL_SERVICES[*]} kafka-cluster)" ;; esac
done

mkdir -p "$STACK"
case $cmd in
up | install)
	for s in "${services[@]}"; do "${s}_$cmd"; done
	;;
down)
	for ((i = ${#services[@]} - 1; i >= 0; i--)); do "${services[$i]}_down"; done
	;;
crash)
	for s in "${services[@]}"; do
		declare -F "${s}_crash" >/dev/null || die "crash: not for $s (postgres, mariadb, kafka)"
		"${s}_crash"
	done
	;;
status)
	rc=0
	for s in "${services[@]}"; do "${s}_status" || rc=1; done
	exit $rc
	;;
env) print_env ;;
*) die "unknown command '$cmd' (use: up, down, crash, status, env, install)" ;;
esac
