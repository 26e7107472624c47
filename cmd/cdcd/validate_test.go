package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
