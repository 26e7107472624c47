package e2e

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pglogrepl"

	pgcapture "github.com/cdcd-dev/cdcd/capture/postgres"
	"github.com/cdcd-dev/cdcd/internal/testenv"
)

// expectExit waits for cdcd to exit on its own with code and checks the log names the problem.
func expectExit(t *testing.T, h *harness, within time.Duration, code int, mentions ...string) {
	t.Helper()
	done, got := h.exited(within)
	if !done {
		t.Fatalf("cdcd still runs after %v; want exit %d", within, code)
	}
	if got != code {
		t.Errorf("exit code %d, want %d", got, code)
	}
	log := h.log()
	for _, m := range mentions {
		if !strings.Contains(log, m) {
			t.Errorf("the log does not mention %q:\n%s", m, log)
		}
	}
	if strings.Contains(log, "panic:") {
		t.Errorf("cdcd panicked:\n%s", log)
	}
}

func TestRunRefusesWalLevelReplica(t *testing.T) {
	t.Parallel()
	dsn := testenv.ScratchPostgres(t, "runwalreplica", 15497, "wal_level=replica")
	h := newHarness(t, "CREATE TABLE t (id int PRIMARY KEY)", "--set", "source.postgres.dsn="+dsn, "--set", "source.postgres.tables=public.t")
	scratch := exec.Command("psql", dsn, "-qc", "CREATE TABLE IF NOT EXISTS public.t (id int PRIMARY KEY)")
	if out, err := scratch.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	h.start()
	expectExit(t, h, time.Minute, 1, `wal_level is \"replica\"`, "ALTER SYSTEM SET wal_level = logical")
}

func TestRunRefusesMissingReplicationRight(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "CREATE TABLE t (id int PRIMARY KEY)")
	role := h.id + "_norepl"
	admin := newAdmin(t)
	admin(fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD 'pw'", role))
	admin(fmt.Sprintf("GRANT USAGE ON SCHEMA %s TO %s; GRANT SELECT ON ALL TABLES IN SCHEMA %s TO %s", h.schema, role, h.schema, role))
	t.Cleanup(func() { admin("DROP OWNED BY " + role + "; DROP ROLE " + role) })
	h.extra = append(h.extra, "--set", "source.postgres.dsn="+strings.Replace(h.dsn, "cdc:cdc@", role+":pw@", 1))
	h.start()
	expectExit(t, h, time.Minute, 1, "lacks the REPLICATION attribute", "ALTER ROLE")
}

func TestRunRefusesUnknownTable(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "CREATE TABLE t (id int PRIMARY KEY)")
	h.extra = append(h.extra, "--set", "source.postgres.tables="+h.schema+".t,"+h.schema+".nope")
	h.start()
	expectExit(t, h, time.Minute, 1, "table "+h.schema+".nope: does not exist", "source.postgres.tables")
}

func TestRunRefusesUnknownConfigKey(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "CREATE TABLE t (id int PRIMARY KEY)")
	b, _ := os.ReadFile(h.cfgPath)
	if err := os.WriteFile(h.cfgPath, append(b, []byte("kafka_brokers: [x]\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	h.start()
	expectExit(t, h, 30*time.Second, 2, "invalid keys: kafka_brokers")
}

func TestRunWaitsForBusySlotThenStops(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "CREATE TABLE t (id int PRIMARY KEY)")
	// Another consumer holds the slot.
	rc, err := pgcapture.ConnectReplication(context.Background(), h.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close(context.Background())
	h.exec("CREATE PUBLICATION " + h.id + " FOR TABLE t")
	if _, err := pglogrepl.CreateReplicationSlot(context.Background(), rc, h.id, "pgoutput", pglogrepl.CreateReplicationSlotOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := pglogrepl.StartReplication(context.Background(), rc, h.id, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names '" + h.id + "'"}}); err != nil {
		t.Fatal(err)
	}
	h.start()
	expectExit(t, h, 90*time.Second, 1, "replication slot is in use by the process with pid", "another cdcd with the same source.postgres.slot")
}

// TestRunConfigurationErrorsAreTerminal: a wrong password and a database that does not exist cannot
// heal by waiting: cdcd exits 1 at once with the fix, instead of retrying forever.
func TestRunConfigurationErrorsAreTerminal(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct{ from, to, mention string }{
		"wrong password":   {"cdc:cdc@", "cdc:wrong@", "check the user and password in source.postgres.dsn"},
		"missing database": {"/cdcd?", "/no_such_db?", "create the database or correct its name in source.postgres.dsn"},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, "CREATE TABLE t (id int PRIMARY KEY)")
			if !strings.Contains(h.dsn, tc.from) {
				t.Skipf("the stack's DSN %s has no %q to change", h.dsn, tc.from)
			}
			h.start("--set", "source.postgres.dsn="+strings.Replace(h.dsn, tc.from, tc.to, 1))
			expectExit(t, h, 30*time.Second, 1, tc.mention)
			if strings.Contains(h.log(), "restarting from the last durable position") {
				t.Errorf("cdcd retried a configuration error:\n%s", h.log())
			}
		})
	}
}

func TestRunKafkaUnreachableIsRetriedAndNamed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "CREATE TABLE t (id int PRIMARY KEY)", "--set", "kafka.brokers=127.0.0.1:1", "--set", "metrics.listen=127.0.0.1:19199")
	h.start()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(h.log(), "connecting to Kafka at [127.0.0.1:1]") && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(h.log(), "check kafka.brokers") {
		t.Fatalf("the log does not name the brokers and the fix:\n%s", h.log())
	}
	resp, err := http.Get("http://127.0.0.1:19199/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "waiting since") || !strings.Contains(string(body), "connecting to Kafka at [127.0.0.1:1]") {
		t.Errorf("/healthz = %d %s while Kafka is unreachable, want 503 saying what cdcd waits for and since when", resp.StatusCode, body)
	}
	if !strings.Contains(h.log(), "failing_since=") {
		t.Errorf("the log does not say since when cdcd has been failing:\n%s", h.log())
	}
	if done, _ := h.exited(time.Second); done {
		t.Errorf("cdcd gave up on an unreachable broker; it should keep retrying:\n%s", h.log())
	}
}

// TestRunOversizeRecordStopsWithoutLoss: a row whose record exceeds the topic's max.message.bytes
// stops cdcd with an error naming the limit; nothing is confirmed past it, so once the limit is
// raised a restart delivers the row.
func TestRunOversizeRecordStopsWithoutLoss(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "CREATE TABLE t (id int PRIMARY KEY, body text)")
	admin, err := sarama.NewClusterAdmin(h.brokers, sarama.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	topic := h.id + ".t"
	if err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1,
		ConfigEntries: map[string]*string{"max.message.bytes": ptr("20000")}}, false); err != nil {
		t.Fatal(err)
	}
	w := newRecorder(h)
	h.start()
	h.waitStreaming(time.Minute)
	w.begin()
	w.insert("t", "id, body", 1, "small")
	w.commit()
	h.waitDurable(time.Minute)
	w.begin()
	// Random hex: lz4 (cdcd's default codec) finds nothing to shrink in it, where a repeated
	// character would compress under the limit.
	w.insert("t", "id, body", 2, randomHex(t, 25000))
	w.commit()
	expectExit(t, h, time.Minute, 1, "larger than the broker or topic accepts", "max.message.bytes")
	if !regexp.MustCompile(`nothing was confirmed`).MatchString(h.log()) {
		t.Errorf("the error does not say that nothing was confirmed:\n%s", h.log())
	}

	if err := admin.AlterConfig(sarama.TopicResource, topic, map[string]*string{"max.message.bytes": ptr("1000000")}, false); err != nil {
		t.Fatal(err)
	}
	h.start()
	h.waitStreaming(time.Minute)
	h.waitDurable(time.Minute)
	h.stop()
	h.verify(w.events, h.readAll())
}

func ptr[T any](v T) *T { return &v }

// randomHex is n random bytes in hex.
func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := crand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// newAdmin returns a function running SQL as the superuser.
func newAdmin(t *testing.T) func(string) {
	dsn := testenv.PostgresAdminDSN(t)
	return func(sql string) {
		t.Helper()
		out, err := exec.Command("psql", dsn, "-v", "ON_ERROR_STOP=1", "-qc", sql).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v: %s", sql, err, out)
		}
	}
}

// TestRunFencedBySecondProcess: a second cdcd with the same kafka.transactional_id fences the first,
// which stops with an error that names the transactional id.
func TestRunFencedBySecondProcess(t *testing.T) {
	t.Parallel()
	a := newHarness(t, "CREATE TABLE t (id int PRIMARY KEY)")
	b := newHarness(t, "CREATE TABLE t (id int PRIMARY KEY)", "--set", "kafka.transactional_id="+a.id)
	wa := newRecorder(a)
	a.start()
	a.waitStreaming(time.Minute)
	b.start()
	b.waitStreaming(time.Minute)
	// A's next Kafka transaction finds itself fenced.
	wa.begin()
	wa.insert("t", "id", 1)
	wa.commit()
	expectExit(t, a, 30*time.Second, 1, "this cdcd was fenced", a.id)
	if done, _ := b.exited(time.Second); done {
		t.Errorf("the second cdcd stopped too:\n%s", b.log())
	}
}

// TestValidateWhileCdcdRuns: validating the configuration of a running cdcd reports its slot as in
// use by cdcd, naming the process, as information: exit 0.
func TestValidateWhileCdcdRuns(t *testing.T) {
	h := newHarness(t, "CREATE TABLE t (id int PRIMARY KEY)")
	h.start()
	h.waitStreaming(time.Minute)
	h.proc.mu.Lock()
	pid := h.proc.cmd.Process.Pid
	h.proc.mu.Unlock()
	out, err := exec.Command(cdcdBin, "validate", "-c", h.cfgPath).CombinedOutput()
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("in use by cdcd (pid %d)", pid)) {
		t.Errorf("validate while cdcd (pid %d) streams: %v\n%s", pid, err, out)
	}
	h.stop()
}
