package mysql

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/cdcd-dev/cdcd/capture"
	"github.com/cdcd-dev/cdcd/internal/preflight"
)

func init() {
	newConfig := func() capture.Config { c := DefaultConfig(); return &c }
	// One reader serves both flavours; it tells them apart by the server's version.
	capture.Register("mysql", capture.Kind{Section: "mysql", NewConfig: newConfig})
	capture.Register("mariadb", capture.Kind{Section: "mysql", NewConfig: newConfig})
}

// Config is the mysql and mariadb kinds' settings (source.mysql.*).
type Config struct {
	Addr     string `mapstructure:"addr" doc:"host:port of MySQL or MariaDB"`
	User     string `mapstructure:"user" doc:"the replication user"`
	Password string `mapstructure:"password" doc:"the replication user's password"`
	// ServerID identifies cdcd to the server as a replica; it must differ from every server's and
	// replica's server_id in the topology.
	ServerID uint32 `mapstructure:"server_id" doc:"cdcd's server_id as a replica; unique in the topology"`
	// Tables lists database-qualified tables to capture; empty means all.
	Tables []string `mapstructure:"tables" doc:"database-qualified tables to capture; empty: all"`
	// Snapshot says whether a start without a commit stream copies the captured tables first.
	Snapshot SnapshotMode `mapstructure:"snapshot" doc:"initial (copy existing rows once, on the first start) or never (stream from the server's current position)"`
	// SignalTable (database.table, columns id, type and data) is where cdcd writes the watermarks that
	// place snapshot chunks in the binlog, and where users insert Debezium-style signals. With it set,
	// snapshots are copied in chunks beside the stream and can be asked for while cdcd runs; without
	// it, the initial snapshot is one consistent read in one transaction.
	SignalTable string `mapstructure:"signal_table" doc:"database.table (id, type, data) for snapshot watermarks and signals; enables chunked and on-demand snapshots"`
	// SnapshotChunkRows is how many rows one chunk of a chunked snapshot copies.
	SnapshotChunkRows int `mapstructure:"snapshot_chunk_rows" doc:"rows per chunk of a chunked snapshot (with signal_table); each chunk is its own transaction"`
	// Heartbeat is the period of the server's heartbeat events on a quiet binlog, which keep the
	// connection and the lag metrics alive.
	Heartbeat time.Duration `mapstructure:"heartbeat" doc:"the period of the server's heartbeats on a quiet binlog"`
}

// SnapshotMode says whether the first start copies the tables before streaming.
type SnapshotMode string

const (
	// SnapshotInitial copies the captured tables in one consistent read, then streams from exactly
	// the binlog position of that read.
	SnapshotInitial SnapshotMode = "initial"
	// SnapshotNever streams from the server's current position.
	SnapshotNever SnapshotMode = "never"
)

// DefaultConfig is the settings when nothing is set.
func DefaultConfig() Config {
	return Config{ServerID: 4021, Snapshot: SnapshotInitial, SnapshotChunkRows: 10_000, Heartbeat: 5 * time.Second}
}

var _ capture.Config = (*Config)(nil)

// Validate implements capture.Config.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("source.mysql.%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.Addr == "" {
		bad("addr", "is empty; set it to host:port, e.g. 127.0.0.1:3306")
	}
	if c.User == "" {
		bad("user", "is empty; name a user with REPLICATION SLAVE and REPLICATION CLIENT")
	}
	if c.ServerID == 0 {
		bad("server_id", "must be a non-zero id unique among the servers and replicas")
	}
	switch c.Snapshot {
	case SnapshotInitial, SnapshotNever:
	default:
		bad("snapshot", "%q is not one of %s, %s", c.Snapshot, SnapshotInitial, SnapshotNever)
	}
	if c.Heartbeat < time.Second {
		bad("heartbeat", "must be at least 1s, e.g. 5s")
	}
	if c.SignalTable != "" {
		if s, n, ok := strings.Cut(c.SignalTable, "."); !ok || s == "" || n == "" {
			bad("signal_table", "%q is not database-qualified; write it as database.table, e.g. app.cdcd_signal", c.SignalTable)
		}
	}
	if c.SnapshotChunkRows <= 0 {
		bad("snapshot_chunk_rows", "must be a positive number of rows such as 10000")
	}
	for _, t := range c.Tables {
		if s, n, ok := strings.Cut(t, "."); !ok || s == "" || n == "" {
			bad("tables", "%q is not database-qualified; write it as database.table", t)
		}
	}
	return errors.Join(errs...)
}

// Check implements capture.Config with the package's Check.
func (c *Config) Check(ctx context.Context, r *preflight.Report) error {
	return Check(ctx, c.checkConfig(), r)
}

func (c *Config) checkConfig() CheckConfig {
	return CheckConfig{Addr: c.Addr, User: c.User, Password: c.Password, ServerID: c.ServerID, Tables: c.Tables, SignalTable: c.SignalTable}
}

// Open implements capture.Config.
func (c *Config) Open(ctx context.Context, log *slog.Logger) (capture.Source, error) {
	return Open(ctx, *c, log)
}
