package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/cdcd-dev/cdcd/internal/testenv"
)

// run executes the cdcd command tree in process and returns its output and exit code.
func run(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := newRootCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	var exit exitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &exit):
		return out.String(), exit.code
	default:
		return out.String() + err.Error(), 2
	}
}

func stackConfig(t *testing.T, extra ...string) []string {
	t.Helper()
	pg := testenv.PostgresDSN(t)
	brokers := testenv.KafkaBrokers(t)
	return append([]string{"validate",
		"--set", "source.kind=postgres",
		"--set", "source.postgres.dsn=" + pg,
		"--set", "source.postgres.slot=validate_cli",
		"--set", "kafka.brokers=" + strings.Join(brokers, ","),
	}, extra...)
}

func TestValidateWalLevelReplica(t *testing.T) {
	dsn := testenv.ScratchPostgres(t, "cliwalreplica", 15498, "wal_level=replica")
	out, code := run(t, stackConfig(t, "--set", "source.postgres.dsn="+dsn)...)
	if code != 1 {
		t.Fatalf("exit code %d, want 1\n%s", code, out)
	}
	for _, want := range []string{`problem postgres: wal_level: wal_level is "replica"`, "fix: run ALTER SYSTEM SET wal_level = logical", "restart PostgreSQL"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestValidateStackPostgresAndKafka(t *testing.T) {
	// With no tables listed, cdcd would create the publication FOR ALL TABLES, which the cdc role (not
	// a superuser) may not do: that is the only problem against the stack.
	out, code := run(t, stackConfig(t, "--set", "source.postgres.publication=validate_cli_pub")...)
	if code != 1 || strings.Count(out, "problem ") != 1 || !strings.Contains(out, "creating one FOR ALL TABLES needs a superuser") {
		t.Fatalf("exit %d\n%s", code, out)
	}
	for _, want := range []string{"ok      postgres: wal_level: logical", "ok      kafka: transactions"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestValidateStackMariaDB(t *testing.T) {
	m := testenv.MariaDB(t)
	out, code := run(t, "validate", "--set", "source.kind=mariadb", "--set", "source.mysql.addr="+m.Addr,
		"--set", "source.mysql.user="+m.User, "--set", "source.mysql.password="+m.Password,
		"--set", "kafka.brokers="+strings.Join(testenv.KafkaBrokers(t), ","))
	if code != 0 || !strings.Contains(out, "all prerequisites hold") {
		t.Fatalf("exit %d\n%s", code, out)
	}
}

func TestValidateKafkaUnreachable(t *testing.T) {
	out, code := run(t, stackConfig(t, "--set", "kafka.brokers=127.0.0.1:1", "--set", "kafka.timeout=1s")...)
	if code != 1 || !strings.Contains(out, "problem kafka: brokers: no broker answered at 127.0.0.1:1") || !strings.Contains(out, "fix: start Kafka or correct kafka.brokers") {
		t.Fatalf("exit %d\n%s", code, out)
	}
}

func TestValidateBadConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(p, []byte("source:\n  kind: postgres\n  postgres:\n    dsn: x\n    slot_name: y\nkafka:\n  brokers: [a:1]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code := run(t, "validate", "-c", p)
	if code != 2 || !strings.Contains(out, "slot_name") || !strings.Contains(out, "invalid keys") {
		t.Fatalf("exit %d\n%s", code, out)
	}
}

func TestVersion(t *testing.T) {
	out, code := run(t, "version")
	if code != 0 || !strings.HasPrefix(out, "cdcd ") {
		t.Fatalf("exit %d: %q", code, out)
	}
}

// TestValidateWarnsOfRecompression: a topic cdcd writes whose compression.type is neither
// "producer" nor cdcd's codec makes the broker recompress every batch; validate says so and how to
// mend it, and is content once the codecs agree.
func TestValidateWarnsOfRecompression(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	admin, err := sarama.NewClusterAdmin(brokers, sarama.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	topic := fmt.Sprintf("validate.commits.gzip.%d", time.Now().UnixNano())
	keep := func(s string) *string { return &s }
	if err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1, ConfigEntries: map[string]*string{
		"cleanup.policy": keep("delete"), "retention.ms": keep("-1"), "retention.bytes": keep("-1"), "compression.type": keep("gzip"),
	}}, false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.DeleteTopic(topic) })
	for _, tc := range []struct{ codec, want string }{
		{"", "warning kafka: compression: " + topic + " has compression.type=gzip while cdcd writes lz4"},
		{"zstd", "warning kafka: compression: " + topic + " has compression.type=gzip while cdcd writes zstd"},
		{"gzip", "ok      kafka: compression: the 1 topic(s) cdcd writes keep its gzip batches as they come"},
	} {
		args := stackConfig(t, "--set", "source.postgres.publication=validate_cli_pub", "--set", "kafka.commit_topic="+topic)
		if tc.codec != "" {
			args = append(args, "--set", "kafka.compression="+tc.codec)
		}
		out, _ := run(t, args...)
		if !strings.Contains(out, tc.want) {
			t.Errorf("kafka.compression %q: output lacks %q:\n%s", tc.codec, tc.want, out)
		}
		if tc.codec != "gzip" && !strings.Contains(out, "--add-config compression.type=producer (or set kafka.compression to gzip)") {
			t.Errorf("kafka.compression %q: the warning gives no fix:\n%s", tc.codec, out)
		}
	}
}
