// Package config loads cdcd's configuration from a YAML file, CDCD_* environment variables and
// command-line overrides, in rising precedence, and checks it before anything connects.
//
// Every key has one spelling: the YAML path, e.g. source.postgres.dsn. The environment variable for
// it is CDCD_ followed by the path in upper case with dots as underscores (CDCD_SOURCE_POSTGRES_DSN),
// and the override flag is --set source.postgres.dsn=... . A key cdcd does not know is an error, never
// silently ignored: a misspelt key would otherwise leave a default in force without anyone noticing.
package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"

	"github.com/cdcd-dev/cdcd/capture"
	"github.com/cdcd-dev/cdcd/kafkasec"
	"github.com/spf13/viper"
)

// Config is the whole configuration of one cdcd process (one source database).
type Config struct {
	Source Source `mapstructure:"source"`
	Kafka  Kafka  `mapstructure:"kafka"`
	// KCOPs is the chain every change goes through; each entry names its KCOP with "type" and
	// carries that KCOP's options, e.g. {type: json, topic: "shop.{table}", tombstones: false}.
	KCOPs []map[string]any `mapstructure:"kcops" doc:"the KCOP chain every change goes through: a list of {type: <kcop>, <option>: ...}"`
	// KCOPWorkers is how many changes of a transaction the chain may run on at once.
	KCOPWorkers int `mapstructure:"kcop_workers" doc:"how many changes of a transaction the KCOP chain runs on at once (records still reach Kafka in source order); more pays for costly KCOPs (avro, encrypt)"`
	// MemoryBudgetMiB is the memory (MiB of Go heap, stacks and runtime data; not the binary's
	// pages) up to which cdcd's garbage collector waits before collecting while little of it is
	// alive; see internal/gcbudget. 0 keeps Go's default pacing; GOGC or GOMEMLIMIT in the
	// environment take precedence.
	MemoryBudgetMiB int     `mapstructure:"memory_budget_mib" doc:"MiB of memory cdcd's garbage collector lets the heap reach before collecting while little is alive (less CPU for more memory); 0: Go's default pacing; GOGC or GOMEMLIMIT in the environment take precedence"`
	Metrics         Metrics `mapstructure:"metrics"`
	Log             Log     `mapstructure:"log"`
}

// Metrics configures the HTTP endpoint that serves /metrics (Prometheus) and /healthz.
type Metrics struct {
	// Listen is host:port; empty turns the endpoint off.
	Listen string `mapstructure:"listen" doc:"host:port of /metrics and /healthz; empty turns them off"`
	// Pprof adds Go's profiler (/debug/pprof/) to the endpoint, for finding where cdcd spends its
	// time and memory; off by default, since anyone who reaches the endpoint may profile.
	Pprof bool `mapstructure:"pprof" doc:"also serve Go's profiler at /debug/pprof/ on metrics.listen"`
}

// Source names the database cdcd captures from. Each registered source kind has its settings under
// source.<section> (source.postgres.dsn, source.mysql.addr); exactly the chosen kind's are used.
type Source struct {
	Kind string `mapstructure:"kind" doc:"the source database: a registered source kind (postgres, mysql or mariadb)"`
	// Sections holds every registered kind's settings by section, defaults filled in.
	Sections Sections `mapstructure:"-"`
}

// Sections maps a configuration section (postgres, mysql) to its kind's settings.
type Sections map[string]capture.Config

// Settings returns the chosen kind's settings.
func (s Source) Settings() (capture.Config, error) {
	k, err := capture.Lookup(s.Kind)
	if err != nil {
		return nil, fmt.Errorf("source.kind: %w", err)
	}
	c, ok := s.Sections[k.Section]
	if !ok {
		return nil, fmt.Errorf("source.kind %q: no settings for section source.%s", s.Kind, k.Section)
	}
	return c, nil
}

// Kafka configures the brokers and cdcd's Kafka identities.
type Kafka struct {
	Brokers  []string `mapstructure:"brokers" doc:"bootstrap brokers, host:port"`
	ClientID string   `mapstructure:"client_id" doc:"the Kafka client id"`
	// TransactionalID is the producer's transactional.id; a second cdcd with the same id fences the first.
	TransactionalID string `mapstructure:"transactional_id" doc:"the producer's transactional.id; a second cdcd with the same id fences the first"`
	// CommitTopic is the commit stream: one record per commit group, the last one being cdcd's bookmark.
	CommitTopic string `mapstructure:"commit_topic" doc:"the commit stream topic: one record per commit group, the last is cdcd's bookmark"`
	// Delivery is transactional (each commit group one Kafka transaction: read_committed consumers
	// see every change once) or parallel (data records through ParallelProducers idempotent producers
	// without transactions, only the commit record transactional: exactly-once through the tcc only).
	Delivery          Delivery `mapstructure:"delivery" doc:"transactional (exactly once for any read_committed consumer) or parallel (exactly once through the tcc)"`
	ParallelProducers int      `mapstructure:"parallel_producers" doc:"idempotent producers for data records in parallel delivery"`
	// Timeout bounds each request to the brokers.
	Timeout time.Duration `mapstructure:"timeout" doc:"bound of each request to the brokers"`
	// TransactionTimeout is the Kafka transaction timeout: the longest a source transaction may
	// take to write (the broker caps it at transaction.max.timeout.ms, 15 minutes by default).
	TransactionTimeout time.Duration `mapstructure:"transaction_timeout" doc:"Kafka transaction timeout: the longest one source transaction may take to write"`
	// MaxMessageBytes is the largest record cdcd writes; keep it at or below the broker's
	// message.max.bytes and the topics' max.message.bytes.
	MaxMessageBytes int `mapstructure:"max_message_bytes" doc:"the largest record cdcd writes (at most the topics' max.message.bytes)"`
	// A commit group (one Kafka transaction of whole source transactions) closes once it holds
	// GroupMaxRecords records or GroupMaxBytes bytes, or GroupMaxDelay after it began.
	GroupMaxRecords int           `mapstructure:"group_max_records" doc:"a commit group closes once it holds this many records"`
	GroupMaxBytes   int64         `mapstructure:"group_max_bytes" doc:"a commit group closes once it holds this many bytes"`
	GroupMaxDelay   time.Duration `mapstructure:"group_max_delay" doc:"a commit group closes this long after it began"`
	// Compression is the codec of the record batches cdcd writes; Kafka keeps them compressed on
	// disk and sends them so to consumers, which decompress them. lz4 by default: a change event's
	// JSON shrinks to a quarter or less on the wire, on disk and in every replica, and on three
	// brokers cdcd wrote 1.4-1.6 times the rows a second, for up to a microsecond of its CPU per
	// wide row (docs/benchmarks.md).
	Compression Compression `mapstructure:"compression" doc:"codec of the record batches cdcd writes: none, gzip, snappy, lz4 or zstd"`
	// Linger is how long the producer lets a partition's batch fill while no commit waits for it
	// (Kafka's linger.ms): closing a commit group sends what is open at once. Under load a longer
	// linger makes larger requests; 0 sends a batch as soon as its broker has no request in flight.
	Linger time.Duration `mapstructure:"linger" doc:"how long the producer lets a batch fill before sending it, unless a commit waits for it (0: send at once)"`
	// TopicPartitions and ReplicationFactor are used for data topics cdcd creates
	// (ReplicationFactor -1: the broker's default).
	TopicPartitions   int32 `mapstructure:"topic_partitions" doc:"partitions of the data topics cdcd creates"`
	ReplicationFactor int16 `mapstructure:"replication_factor" doc:"replication factor of the topics cdcd creates (0: the smaller of 3 and the number of brokers; -1: the brokers' default)"`
	MinInsyncReplicas int16 `mapstructure:"min_insync_replicas" doc:"min.insync.replicas of the topics cdcd creates (0: one less than the replication factor, at least 1; -1: the brokers' default)"`
	// TLS and SASL secure every connection cdcd makes to the brokers.
	TLS  kafkasec.TLS  `mapstructure:"tls"`
	SASL kafkasec.SASL `mapstructure:"sasl"`
}

// Security returns the connection's TLS and SASL settings.
func (k Kafka) Security() kafkasec.Settings { return kafkasec.Settings{TLS: k.TLS, SASL: k.SASL} }

// Delivery is how commit groups reach Kafka.
type Delivery string

const (
	// Transactional makes each commit group one Kafka transaction: read_committed consumers see
	// every change once.
	Transactional Delivery = "transactional"
	// Parallel writes data records through several idempotent producers without transactions and
	// only the commit record transactionally: exactly once through the tcc only.
	Parallel Delivery = "parallel"
)

// Compression is the codec of the record batches cdcd writes (Kafka's compression.type).
type Compression string

// The codecs Kafka knows.
const (
	CompressionNone   Compression = "none"
	CompressionGzip   Compression = "gzip"
	CompressionSnappy Compression = "snappy"
	CompressionLZ4    Compression = "lz4"
	CompressionZstd   Compression = "zstd"
)

// Compressions lists the codecs, in Kafka's numbering.
var Compressions = []Compression{CompressionNone, CompressionGzip, CompressionSnappy, CompressionLZ4, CompressionZstd}

// Log configures slog.
type Log struct {
	Level  string `mapstructure:"level" doc:"log level: debug, info, warn or error"`
	Format string `mapstructure:"format" doc:"log format: text or json"`
}

// Default returns the configuration in force when nothing is set.
func Default() Config {
	return Config{
		Source: Source{Sections: defaultSections()},
		Kafka: Kafka{
			ClientID:           "cdcd",
			TransactionalID:    "cdcd",
			CommitTopic:        "cdcd.commits",
			Delivery:           Transactional,
			ParallelProducers:  4,
			Compression:        CompressionLZ4,
			Timeout:            10 * time.Second,
			TransactionTimeout: 10 * time.Minute,
			MaxMessageBytes:    1000000,
			GroupMaxRecords:    50000,
			GroupMaxBytes:      64 << 20,
			GroupMaxDelay:      100 * time.Millisecond,
			Linger:             2 * time.Millisecond,
			TopicPartitions:    1,
			ReplicationFactor:  0,
			MinInsyncReplicas:  0,
		},
		KCOPs:           []map[string]any{{"type": "json"}},
		KCOPWorkers:     1,
		MemoryBudgetMiB: 56,
		Metrics:         Metrics{Listen: "127.0.0.1:9187"},
		Log:             Log{Level: "info", Format: "text"},
	}
}

func defaultSections() Sections {
	secs := Sections{}
	for _, sc := range capture.Sections() {
		secs[sc.Section] = sc.Config
	}
	return secs
}

// Load reads the YAML file at path (none when path is empty), then CDCD_* environment variables,
// then overrides given as key=value, and checks the result.
func Load(path string, overrides []string) (Config, error) {
	v := viper.New()
	v.SetConfigType("yaml")
	v.SetEnvPrefix("CDCD")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	def := Default()
	keys := Keys()
	for _, k := range keys {
		if err := v.BindEnv(k); err != nil {
			return Config{}, fmt.Errorf("config: binding %s: %w", k, err)
		}
	}
	if err := unknownEnv(keys, os.Environ()); err != nil {
		return Config{}, err
	}
	if path != "" {
		v.SetConfigFile(path)
		if err := v.ReadInConfig(); err != nil {
			return Config{}, fmt.Errorf("config file %s: %w", path, err)
		}
	}
	for _, o := range overrides {
		k, val, ok := strings.Cut(o, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return Config{}, fmt.Errorf("override %q: want key=value, e.g. --set kafka.brokers=127.0.0.1:9092", o)
		}
		if !slices.Contains(keys, k) {
			return Config{}, fmt.Errorf("override %q: unknown key %q; known keys: %s", o, k, strings.Join(keys, ", "))
		}
		v.Set(k, val)
	}
	cfg := def
	// mapstructure merges into existing slice elements; the default chain applies only when the
	// configuration names none.
	cfg.KCOPs = nil
	if err := decode(v.AllSettings(), &cfg); err != nil {
		return Config{}, unknownKeyError(path, err)
	}
	if !v.IsSet("kcops") {
		cfg.KCOPs = def.KCOPs
	}
	if err := cfg.Check(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// decode fills cfg from viper's merged settings: each source section into its kind's typed
// settings, the rest into Config; a key that names nothing is an error.
func decode(all map[string]any, cfg *Config) error {
	if src, ok := all["source"].(map[string]any); ok {
		for section, sc := range cfg.Source.Sections {
			sub, ok := src[section]
			if !ok {
				continue
			}
			delete(src, section)
			if err := decodeExact(sub, sc, "source."+section); err != nil {
				return err
			}
		}
	}
	return decodeExact(all, cfg, "")
}

func decodeExact(in, out any, prefix string) error {
	var md mapstructure.Metadata
	d, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		Result:           out,
		Metadata:         &md,
		WeaklyTypedInput: true,
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			mapstructure.StringToTimeDurationHookFunc(),
			mapstructure.StringToSliceHookFunc(","),
		),
	})
	if err != nil {
		return err
	}
	if err := d.Decode(in); err != nil {
		if prefix != "" {
			return fmt.Errorf("%s: %w", prefix, err)
		}
		return err
	}
	if len(md.Unused) > 0 {
		unused := make([]string, len(md.Unused))
		for i, k := range md.Unused {
			unused[i] = strings.TrimPrefix(prefix+"."+k, ".")
		}
		slices.Sort(unused)
		return fmt.Errorf("has invalid keys: %s", strings.Join(unused, ", "))
	}
	return nil
}

// Keys lists every configuration key cdcd knows, in declaration order.
func Keys() []string {
	var keys []string
	walk(reflect.ValueOf(Default()), "", func(key string, _ reflect.StructField, _ reflect.Value) { keys = append(keys, key) })
	return keys
}

// Environment variables of these prefixes belong to the local servers' scripts and to the tests,
// never to cdcd's settings, so cdcd leaves them alone.
var foreignEnvPrefixes = []string{"CDCD_STACK_", "CDCD_TEST_"}

// EnvName is the environment variable of key, e.g. CDCD_SOURCE_POSTGRES_DSN for source.postgres.dsn.
func EnvName(key string) string { return "CDCD_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_")) }

// unknownEnv reports CDCD_* variables that name no key: a misspelt one would otherwise leave a
// default in force without a word.
func unknownEnv(keys []string, environ []string) error {
	known := make(map[string]bool, len(keys))
	for _, k := range keys {
		known[EnvName(k)] = true
	}
	var unknown []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "CDCD_") || known[name] || slices.ContainsFunc(foreignEnvPrefixes, func(p string) bool { return strings.HasPrefix(name, p) }) {
			continue
		}
		unknown = append(unknown, name)
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	return fmt.Errorf("environment: %s %s no configuration key (a key's variable is CDCD_ and the key in upper case with dots as underscores, e.g. CDCD_KAFKA_BROKERS for kafka.brokers; `cdcd config keys` lists them; CDCD_STACK_* and CDCD_TEST_* are left to the scripts and tests)",
		strings.Join(unknown, ", "), map[bool]string{true: "names", false: "name"}[len(unknown) == 1])
}

func unknownKeyError(path string, err error) error {
	where := "configuration"
	if path != "" {
		where = "config file " + path
	}
	msg := err.Error()
	if strings.Contains(msg, "has invalid keys") {
		return fmt.Errorf("%s: %s (remove or correct them; `cdcd config keys` lists the known keys)", where, msg)
	}
	return fmt.Errorf("%s: %w", where, err)
}

// Check reports the first value that cannot work, naming the key and what it accepts.
func (c Config) Check() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.Source.Kind == "" {
		bad("source.kind", "is not set; use one of %s", strings.Join(capture.Kinds(), ", "))
	} else if sc, err := c.Source.Settings(); err != nil {
		errs = append(errs, err)
	} else if err := sc.Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(c.Kafka.Brokers) == 0 {
		bad("kafka.brokers", "is empty; list at least one host:port")
	}
	if c.Kafka.TransactionalID == "" {
		bad("kafka.transactional_id", "is empty; give each cdcd process its own stable id")
	}
	if c.Kafka.CommitTopic == "" {
		bad("kafka.commit_topic", "is empty; name the commit stream topic")
	}
	switch c.Kafka.Delivery {
	case Transactional:
	case Parallel:
		if c.Kafka.ParallelProducers < 1 {
			bad("kafka.parallel_producers", "must be at least 1")
		}
	default:
		bad("kafka.delivery", "%q is not one of transactional, parallel", c.Kafka.Delivery)
	}
	if !slices.Contains(Compressions, c.Kafka.Compression) {
		bad("kafka.compression", "%q is not one of none, gzip, snappy, lz4, zstd", c.Kafka.Compression)
	}
	if c.Kafka.Timeout <= 0 {
		bad("kafka.timeout", "must be a positive duration such as 10s")
	}
	if c.Kafka.TransactionTimeout < time.Second {
		bad("kafka.transaction_timeout", "must be at least 1s (e.g. 10m)")
	}
	if c.Kafka.MaxMessageBytes < 1024 {
		bad("kafka.max_message_bytes", "must be at least 1024")
	}
	if c.Kafka.GroupMaxRecords <= 0 || c.Kafka.GroupMaxBytes <= 0 || c.Kafka.GroupMaxDelay <= 0 {
		bad("kafka.group_max_records/group_max_bytes/group_max_delay", "must all be positive")
	}
	if c.Kafka.Linger < 0 || c.Kafka.Linger > time.Second {
		bad("kafka.linger", "must be between 0 and 1s (e.g. 2ms)")
	}
	if c.Kafka.TopicPartitions <= 0 {
		bad("kafka.topic_partitions", "must be at least 1")
	}
	if c.Kafka.ReplicationFactor < -1 {
		bad("kafka.replication_factor", "must be 0 (automatic), -1 (the brokers' default) or at least 1")
	}
	if c.Kafka.MinInsyncReplicas < -1 {
		bad("kafka.min_insync_replicas", "must be 0 (automatic), -1 (the brokers' default) or at least 1")
	}
	if rf, isr := c.Kafka.ReplicationFactor, c.Kafka.MinInsyncReplicas; rf > 0 && isr > rf {
		bad("kafka.min_insync_replicas", "%d is more than kafka.replication_factor %d: no write could ever succeed", isr, rf)
	}
	if err := c.Kafka.Security().Validate(); err != nil {
		bad("kafka", "%v", err)
	}
	if len(c.KCOPs) == 0 {
		bad("kcops", "is empty; list at least one KCOP, e.g. [{type: json}]")
	}
	for i, k := range c.KCOPs {
		if t, _ := k["type"].(string); t == "" {
			bad(fmt.Sprintf("kcops[%d]", i), "has no type; name the KCOP, e.g. type: json")
		}
	}
	if c.KCOPWorkers < 1 || c.KCOPWorkers > 256 {
		bad("kcop_workers", "%d is not between 1 and 256", c.KCOPWorkers)
	}
	if c.MemoryBudgetMiB < 0 || c.MemoryBudgetMiB > 1<<20 {
		bad("memory_budget_mib", "%d is not between 0 (Go's default pacing) and 1048576", c.MemoryBudgetMiB)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		bad("log.format", "%q is not one of text, json", c.Log.Format)
	}
	return errors.Join(errs...)
}
