// Package testenv gives tests the addresses of the real servers started by scripts/stack.sh.
//
// Each accessor checks that its server answers. When it does not, the test fails under CI (CI=true),
// where the servers must be there, and is skipped elsewhere with a message naming the command that
// starts them. Addresses default to the stack's defaults and follow the variables printed by
// `scripts/stack.sh env`.
package testenv

import (
	"context"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

const startHint = "start the servers with `make stack` (scripts/stack.sh up), or run everything with `make test`"

// InCI reports whether the tests run in CI, where every server must be present.
func InCI() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v != "" && v != "false" && v != "0"
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// unavailable fails the test in CI and skips it elsewhere.
func unavailable(t testing.TB, what string, err error) {
	t.Helper()
	if InCI() {
		t.Fatalf("%s is not reachable: %v (CI must start it: %s)", what, err, startHint)
	}
	t.Skipf("%s is not reachable: %v; %s", what, err, startHint)
}

func requireTCP(t testing.TB, what, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		unavailable(t, what, err)
		return
	}
	_ = c.Close()
}

// PostgresDSN is the cdc role's connection to the test database.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	dsn := env("CDCD_STACK_PG_DSN", "postgres://cdc:cdc@127.0.0.1:15432/cdcd?sslmode=disable")
	requireTCP(t, "PostgreSQL", hostPort(t, dsn))
	return dsn
}

// PostgresTLSDSN is the cdc role's connection to the test database over TLS with sslmode=verify-full:
// the stack's PostgreSQL has a certificate for localhost from the stack's CA (StackCAFile).
func PostgresTLSDSN(t testing.TB) string {
	t.Helper()
	dsn := env("CDCD_STACK_PG_TLS_DSN", "postgres://cdc:cdc@localhost:15432/cdcd?sslmode=verify-full&sslrootcert="+StackCAFile())
	requireTCP(t, "PostgreSQL", hostPort(t, dsn))
	return dsn
}

// StackCAFile is the local CA that signed the stack's server certificates (PostgreSQL's and the Kafka
// cluster's).
func StackCAFile() string {
	return env("CDCD_STACK_CA_FILE", filepath.Join(StackDir(), "tls", "ca.pem"))
}

// PostgresTargetDSN is the cdc role's connection to the second database, the one consumers write to.
func PostgresTargetDSN(t testing.TB) string {
	t.Helper()
	dsn := env("CDCD_STACK_PG_TARGET_DSN", "postgres://cdc:cdc@127.0.0.1:15432/cdcd_target?sslmode=disable")
	requireTCP(t, "PostgreSQL", hostPort(t, dsn))
	return dsn
}

// PostgresAdminDSN is a superuser connection (over the stack's Unix socket) to the test database.
func PostgresAdminDSN(t testing.TB) string {
	t.Helper()
	PostgresDSN(t)
	return env("CDCD_STACK_PG_ADMIN_DSN", "postgres://postgres@127.0.0.1:15432/cdcd?host="+StackDir()+"/postgres&sslmode=disable")
}

func hostPort(t testing.TB, dsn string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil || u.Host == "" {
		t.Fatalf("testenv: cannot read host:port from DSN %q: %v", dsn, err)
	}
	return u.Host
}

// MySQL describes the stack's MariaDB.
type MySQL struct {
	Addr, User, Password, Database string
}

// MariaDB returns the cdc user's address and credentials.
func MariaDB(t testing.TB) MySQL {
	t.Helper()
	m := MySQL{
		Addr:     env("CDCD_STACK_MYSQL_ADDR", "127.0.0.1:13306"),
		User:     env("CDCD_STACK_MYSQL_USER", "cdc"),
		Password: env("CDCD_STACK_MYSQL_PASSWORD", "cdc"),
		Database: env("CDCD_STACK_MYSQL_DB", "cdcd"),
	}
	requireTCP(t, "MariaDB", m.Addr)
	return m
}

// KafkaBrokers returns the bootstrap addresses of the real broker.
func KafkaBrokers(t testing.TB) []string {
	t.Helper()
	brokers := strings.Split(env("CDCD_STACK_KAFKA_BROKERS", "127.0.0.1:19092"), ",")
	requireTCP(t, "Kafka", brokers[0])
	return brokers
}

// RegistryURL is the Confluent-compatible API of the schema registry.
func RegistryURL(t testing.TB) string {
	t.Helper()
	u := env("CDCD_STACK_REGISTRY_URL", "http://127.0.0.1:18081/apis/ccompat/v7")
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatalf("testenv: CDCD_STACK_REGISTRY_URL %q: %v", u, err)
	}
	requireTCP(t, "the schema registry", pu.Host)
	return u
}

// RepoRoot is the repository's top directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// StackDir is where scripts/stack.sh keeps the servers' data.
func StackDir() string { return env("CDCD_STACK_DIR", filepath.Join(RepoRoot(), ".stack")) }

// Stack runs scripts/stack.sh with args and returns its standard output.
func Stack(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(RepoRoot(), "scripts", "stack.sh"), args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scripts/stack.sh %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// ScratchPostgres starts a throwaway PostgreSQL with the given settings (e.g. "wal_level=replica")
// on port, removes it when the test ends, and returns the cdc role's DSN for it.
func ScratchPostgres(t testing.TB, name string, port int, settings ...string) string {
	t.Helper()
	PostgresDSN(t) // the same binaries; skip or fail the same way when the stack is absent
	args := append([]string{"scratch-postgres", "up", name, strconv.Itoa(port)}, settings...)
	dsn := Stack(t, args...)
	t.Cleanup(func() { Stack(t, "scratch-postgres", "down", name) })
	return dsn
}

// Cluster is the stack's three-node Kafka cluster (`scripts/stack.sh up kafka-cluster`).
type Cluster struct {
	// Brokers are the PLAINTEXT listeners; SecureBrokers the SASL_SSL ones, whose certificates the
	// CA in CAFile signs and which take User and Password with SCRAM-SHA-256 or SCRAM-SHA-512.
	Brokers, SecureBrokers []string
	CAFile, User, Password string
	// Dir holds node<N>/kafka.pid of each node.
	Dir string
}

// KafkaCluster is the stack's three-node cluster. The tests that use it (named TestCluster...) run in
// a step of their own of scripts/test.sh, which starts the cluster and sets CDCD_TEST_CLUSTER=1; in
// other runs they skip. In that step a cluster that is not up fails them in CI and skips them
// elsewhere.
func KafkaCluster(t testing.TB) Cluster {
	t.Helper()
	if os.Getenv("CDCD_TEST_CLUSTER") == "" {
		t.Skip("a three-node cluster test: run by scripts/test.sh's cluster step, or by hand with `scripts/stack.sh up kafka-cluster` and CDCD_TEST_CLUSTER=1")
	}
	c := Cluster{
		Brokers:       strings.Split(env("CDCD_STACK_KAFKA_CLUSTER_BROKERS", "127.0.0.1:19191,127.0.0.1:19192,127.0.0.1:19193"), ","),
		SecureBrokers: strings.Split(env("CDCD_STACK_KAFKA_CLUSTER_SECURE_BROKERS", "127.0.0.1:19201,127.0.0.1:19202,127.0.0.1:19203"), ","),
		CAFile:        env("CDCD_STACK_KAFKA_CLUSTER_CA_FILE", StackCAFile()),
		User:          env("CDCD_STACK_KAFKA_CLUSTER_USER", "cdcd"),
		Password:      env("CDCD_STACK_KAFKA_CLUSTER_PASSWORD", "cdcd-cluster-secret"),
		Dir:           filepath.Join(StackDir(), "kafka-cluster"),
	}
	for _, b := range append(append([]string(nil), c.Brokers...), c.SecureBrokers...) {
		c, err := net.DialTimeout("tcp", b, 2*time.Second)
		if err != nil {
			if InCI() {
				t.Fatalf("the Kafka cluster is not reachable at %s: %v (CI must start it: scripts/stack.sh up kafka-cluster)", b, err)
			}
			t.Skipf("the Kafka cluster is not reachable at %s: %v; start it with scripts/stack.sh up kafka-cluster", b, err)
		}
		_ = c.Close()
	}
	return c
}

// EditDSN returns dsn, a URL, as change leaves it; change may edit the URL and its query parameters.
func EditDSN(t testing.TB, dsn string, change func(u *url.URL, q url.Values)) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("testenv: DSN %q is not a URL: %v", dsn, err)
	}
	q := u.Query()
	change(u, q)
	u.RawQuery = q.Encode()
	return u.String()
}
