package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cdcd-dev/cdcd/capture/mysql"
	"github.com/cdcd-dev/cdcd/capture/postgres"
)

func pgConfig(t *testing.T, cfg Config) *postgres.Config {
	t.Helper()
	c, ok := cfg.Source.Sections["postgres"].(*postgres.Config)
	if !ok {
		t.Fatalf("source.postgres holds %T", cfg.Source.Sections["postgres"])
	}
	return c
}

func myConfig(t *testing.T, cfg Config) *mysql.Config {
	t.Helper()
	c, ok := cfg.Source.Sections["mysql"].(*mysql.Config)
	if !ok {
		t.Fatalf("source.mysql holds %T", cfg.Source.Sections["mysql"])
	}
	return c
}

// hermetic clears every CDCD_* variable that names a key, so that the environment the tests run in
// does not leak into them.
func hermetic(t *testing.T) {
	t.Helper()
	for _, k := range Keys() {
		t.Setenv(EnvName(k), "")
	}
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	hermetic(t)
	p := filepath.Join(t.TempDir(), "cdcd.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const minimal = `
source:
  kind: postgres
  postgres:
    dsn: postgres://u:p@h/db
kafka:
  brokers: [a:9092, b:9092]
`

func TestLoadPrecedence(t *testing.T) {
	path := writeFile(t, minimal+"  timeout: 3s\n")
	t.Setenv("CDCD_KAFKA_TRANSACTIONAL_ID", "from-env")
	t.Setenv("CDCD_SOURCE_POSTGRES_SLOT", "env_slot")
	cfg, err := Load(path, []string{"source.postgres.slot=flag_slot", "source.postgres.tables=public.a,public.b"})
	if err != nil {
		t.Fatal(err)
	}
	if pgConfig(t, cfg).DSN != "postgres://u:p@h/db" || strings.Join(cfg.Kafka.Brokers, ",") != "a:9092,b:9092" {
		t.Errorf("file values not read: %+v", cfg)
	}
	if cfg.Kafka.Timeout != 3*time.Second {
		t.Errorf("timeout = %v", cfg.Kafka.Timeout)
	}
	if cfg.Kafka.TransactionalID != "from-env" {
		t.Errorf("env did not override the default: %q", cfg.Kafka.TransactionalID)
	}
	if pgConfig(t, cfg).Slot != "flag_slot" {
		t.Errorf("--set did not override env: %q", pgConfig(t, cfg).Slot)
	}
	if strings.Join(pgConfig(t, cfg).Tables, "|") != "public.a|public.b" {
		t.Errorf("tables = %q", pgConfig(t, cfg).Tables)
	}
	if pgConfig(t, cfg).Publication != "cdcd" || cfg.Kafka.CommitTopic != "cdcd.commits" || cfg.Kafka.Compression != CompressionLZ4 {
		t.Errorf("defaults lost: %+v", cfg)
	}
	cfg, err = Load(path, []string{"kafka.compression=zstd"})
	if err != nil || cfg.Kafka.Compression != CompressionZstd {
		t.Errorf("kafka.compression=zstd: %q, %v", cfg.Kafka.Compression, err)
	}
}

func TestLoadEnvOnly(t *testing.T) {
	hermetic(t)
	t.Setenv("CDCD_SOURCE_KIND", "mariadb")
	t.Setenv("CDCD_SOURCE_MYSQL_ADDR", "127.0.0.1:3306")
	t.Setenv("CDCD_SOURCE_MYSQL_USER", "cdc")
	t.Setenv("CDCD_KAFKA_BROKERS", "k1:9092,k2:9092")
	cfg, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if myConfig(t, cfg).Addr != "127.0.0.1:3306" || len(cfg.Kafka.Brokers) != 2 {
		t.Errorf("%+v", cfg)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name      string
		file      string
		overrides []string
		want      []string
	}{
		{"unknown key", "source:\n  kind: postgres\n  postgres:\n    dsn: x\n    slots: x\nkafka:\n  brokers: [a:1]\n", nil, []string{"invalid keys", "slots", "cdcd config keys"}},
		{"unknown section", minimal + "metrix:\n  listen: x\n", nil, []string{"invalid keys", "metrix"}},
		{"unknown override", minimal, []string{"kafka.broker=x"}, []string{`unknown key "kafka.broker"`}},
		{"override without value", minimal, []string{"kafka.brokers"}, []string{"want key=value"}},
		{"no kind", "kafka:\n  brokers: [a:1]\n", nil, []string{"source.kind: is not set"}},
		{"bad kind", minimal, []string{"source.kind=oracle"}, []string{`"oracle" is not one of mariadb, mysql, postgres`}},
		{"unqualified table", minimal, []string{"source.postgres.tables=orders"}, []string{"public.orders"}},
		{"bad slot", minimal, []string{"source.postgres.slot=My-Slot"}, []string{"not a valid slot name"}},
		{"bad snapshot", minimal, []string{"source.postgres.snapshot=always"}, []string{"initial, never"}},
		{"bad duration", minimal, []string{"kafka.timeout=soon"}, []string{"timeout"}},
		{"negative linger", minimal, []string{"kafka.linger=-1ms"}, []string{"kafka.linger: must be between 0 and 1s"}},
		{"long linger", minimal, []string{"kafka.linger=2s"}, []string{"kafka.linger: must be between 0 and 1s"}},
		{"bad compression", minimal, []string{"kafka.compression=lz5"}, []string{`kafka.compression: "lz5" is not one of none, gzip, snappy, lz4, zstd`}},
		{"empty compression", minimal, []string{"kafka.compression="}, []string{`kafka.compression: "" is not one of`}},
		{"no parallel producers", minimal, []string{"kafka.delivery=parallel", "kafka.parallel_producers=0"}, []string{"kafka.parallel_producers"}},
		{"no brokers", "source:\n  kind: postgres\n  postgres:\n    dsn: x\n", nil, []string{"kafka.brokers: is empty"}},
		{"bad yaml", "source: [\n", nil, []string{"config file"}},
		{"sasl without mechanism", minimal, []string{"kafka.sasl.user=cdcd"}, []string{"kafka.sasl: a user or password is set but no mechanism"}},
		{"plain without tls", minimal, []string{"kafka.sasl.mechanism=PLAIN", "kafka.sasl.user=u", "kafka.sasl.password=p"}, []string{"PLAIN sends the password in clear"}},
		{"tls file without tls", minimal, []string{"kafka.tls.ca_file=/ca.pem"}, []string{"need kafka.tls.enabled: true"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(writeFile(t, tc.file), tc.overrides)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	hermetic(t)
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"), nil)
	if err == nil || !strings.Contains(err.Error(), "nope.yaml") {
		t.Fatalf("err = %v", err)
	}
}

func TestKeysCoverEveryLeaf(t *testing.T) {
	keys := Keys()
	for _, want := range []string{"source.kind", "source.postgres.dsn", "source.postgres.heartbeat", "source.mysql.server_id", "kafka.brokers", "log.format"} {
		found := false
		for _, k := range keys {
			found = found || k == want
		}
		if !found {
			t.Errorf("Keys() lacks %s: %v", want, keys)
		}
	}
}

// TestUnknownEnvironmentVariable: a CDCD_* variable that names no key is an error naming it, like an
// unknown key in the file; the scripts' and tests' own namespaces are left alone.
func TestUnknownEnvironmentVariable(t *testing.T) {
	p := writeFile(t, minimal)
	t.Setenv("CDCD_STACK_PG_DSN", "postgres://elsewhere")
	t.Setenv("CDCD_TEST_CRASH_KILLS", "3")
	if _, err := Load(p, nil); err != nil {
		t.Fatalf("the scripts' variables were taken for settings: %v", err)
	}
	t.Setenv("CDCD_KAFKA_BROKER", "k1:9092")
	_, err := Load(p, nil)
	if err == nil || !strings.Contains(err.Error(), "CDCD_KAFKA_BROKER ") || !strings.Contains(err.Error(), "CDCD_KAFKA_BROKERS for kafka.brokers") {
		t.Fatalf("a misspelt variable: %v", err)
	}
}

// TestDescribeEveryKey: every key has a type, its default and a line of meaning.
func TestDescribeEveryKey(t *testing.T) {
	infos := Describe()
	if len(infos) != len(Keys()) {
		t.Fatalf("%d keys described, %d known", len(infos), len(Keys()))
	}
	for _, k := range infos {
		if k.Type == "" || k.Doc == "" || k.Env != EnvName(k.Key) {
			t.Errorf("%+v lacks its type, meaning or variable", k)
		}
	}
}

// TestShowSourcesAndSecrets: every value says where it came from, and passwords never show.
func TestShowSourcesAndSecrets(t *testing.T) {
	p := writeFile(t, `
source:
  kind: postgres
  postgres:
    dsn: postgres://cdc:s3cret@db:5432/app
    slot: from_file
  mysql:
    password: hunter2
kafka:
  brokers: [k:9092]
`)
	t.Setenv("CDCD_KAFKA_TIMEOUT", "20s")
	t.Setenv("CDCD_KAFKA_SASL_PASSWORD", "sw0rdfish")
	t.Setenv("CDCD_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
	t.Setenv("CDCD_KAFKA_SASL_USER", "cdcd")
	settings, err := Show(p, []string{"log.level=debug"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Setting{}
	for _, s := range settings {
		got[s.Key] = s
		if strings.Contains(s.Value, "s3cret") || strings.Contains(s.Value, "hunter2") || strings.Contains(s.Value, "sw0rdfish") {
			t.Errorf("%s shows a secret: %s", s.Key, s.Value)
		}
	}
	for key, want := range map[string]Setting{
		"source.postgres.slot":  {Value: "from_file", Source: "file"},
		"source.postgres.dsn":   {Value: "postgres://cdc:****@db:5432/app", Source: "file"},
		"source.mysql.password": {Value: "****", Source: "file"},
		"kafka.sasl.password":   {Value: "****", Source: "env CDCD_KAFKA_SASL_PASSWORD"},
		"kafka.timeout":         {Value: "20s", Source: "env CDCD_KAFKA_TIMEOUT"},
		"log.level":             {Value: "debug", Source: "flag"},
		"kafka.group_max_delay": {Value: "100ms", Source: "default"},
		"kafka.linger":          {Value: "2ms", Source: "default"},
	} {
		if g := got[key]; g.Value != want.Value || g.Source != want.Source {
			t.Errorf("%s = %q (%s), want %q (%s)", key, g.Value, g.Source, want.Value, want.Source)
		}
	}
	if m := mask("source.postgres.dsn", "host=db user=cdc password='a b' dbname=app"); strings.Contains(m, "a b") {
		t.Errorf("a key=value DSN shows its password: %s", m)
	}
}
