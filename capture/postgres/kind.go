package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdcd-dev/cdcd/bookmark"
	"github.com/cdcd-dev/cdcd/capture"
	"github.com/cdcd-dev/cdcd/internal/preflight"
)

func init() {
	capture.Register("postgres", capture.Kind{Section: "postgres", NewConfig: func() capture.Config { c := DefaultConfig(); return &c }})
}

// DefaultConfig is the postgres kind's settings when nothing is set.
func DefaultConfig() Config {
	return Config{Slot: "cdcd", Publication: "cdcd", Snapshot: SnapshotInitial, Binary: BinaryAuto, SnapshotChunkRows: 10_000, SnapshotParallel: 1, Heartbeat: 10 * time.Second}
}

var (
	_ capture.Config         = (*Config)(nil)
	_ capture.RetainedLogger = (*Config)(nil)
	_ capture.Lagger         = (*Reader)(nil)
	_ capture.Flusher        = (*Reader)(nil)
)

// Validate implements capture.Config.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("source.postgres.%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.DSN == "" {
		bad("dsn", "is empty; set it to e.g. postgres://cdc:secret@127.0.0.1:5432/app")
	}
	if c.Slot == "" {
		bad("slot", "is empty; name the replication slot, e.g. cdcd")
	} else if !validSlotName(c.Slot) {
		bad("slot", "%q is not a valid slot name (lower-case letters, digits and underscores, at most 63)", c.Slot)
	}
	if c.Publication == "" {
		bad("publication", "is empty; name the publication, e.g. cdcd")
	}
	switch c.Snapshot {
	case SnapshotInitial, SnapshotNever:
	default:
		bad("snapshot", "%q is not one of %s, %s", c.Snapshot, SnapshotInitial, SnapshotNever)
	}
	switch c.Binary {
	case BinaryAuto, BinaryOff:
	default:
		bad("binary", "%q is not one of %s, %s", c.Binary, BinaryAuto, BinaryOff)
	}
	for _, t := range c.Tables {
		if s, n, ok := strings.Cut(t, "."); !ok || s == "" || n == "" {
			bad("tables", "%q is not schema-qualified; write it as schema.table, e.g. public.%s", t, t)
		}
	}
	if c.Heartbeat <= 0 {
		bad("heartbeat", "must be a positive duration such as 10s")
	}
	if c.SignalTable != "" {
		if s, n, ok := strings.Cut(c.SignalTable, "."); !ok || s == "" || n == "" {
			bad("signal_table", "%q is not schema-qualified; write it as schema.table, e.g. public.cdcd_signal", c.SignalTable)
		}
	}
	if c.SnapshotChunkRows <= 0 {
		bad("snapshot_chunk_rows", "must be a positive number of rows such as 10000")
	}
	if c.SnapshotParallel < 1 || c.SnapshotParallel > maxSnapshotParallel {
		bad("snapshot_parallel", "must be between 1 and %d connections", maxSnapshotParallel)
	}
	if c.AcceptGapTo != "" {
		if _, err := bookmark.ParseLSN(c.AcceptGapTo); err != nil {
			bad("accept_gap_to", "%q is not an LSN; copy the slot's confirmed position from cdcd's error, e.g. 0/16B3748", c.AcceptGapTo)
		}
	}
	return errors.Join(errs...)
}

// maxSnapshotParallel bounds snapshot_parallel: each lane is a connection and an open snapshot on
// the server.
const maxSnapshotParallel = 32

func validSlotName(s string) bool {
	if len(s) > 63 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// Check implements capture.Config with the package's Check.
func (c *Config) Check(ctx context.Context, r *preflight.Report) error {
	return Check(ctx, CheckConfig{DSN: c.DSN, Slot: c.Slot, Publication: c.Publication, Tables: c.Tables}, r)
}

// Open implements capture.Config with the package's Open.
func (c *Config) Open(ctx context.Context, log *slog.Logger) (capture.Source, error) {
	return Open(ctx, *c, log)
}

// RetainedLog implements capture.RetainedLogger: the WAL the slot keeps from being recycled.
func (c *Config) RetainedLog(ctx context.Context) (int64, error) {
	cc, err := connConfig(c.DSN)
	if err != nil {
		return 0, err
	}
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return SlotRetained(ctx, conn, c.Slot)
}

// Lag implements capture.Lagger: the WAL the server has written past what is durable downstream,
// and how long ago the oldest read but not yet durable transaction committed.
func (r *Reader) Lag() (bytes int64, behind float64) {
	st := r.Stats()
	if st.ServerWALEnd > st.Acked {
		bytes = int64(st.ServerWALEnd - st.Acked)
	}
	if st.Received > st.Acked && !st.LastCommit.IsZero() {
		behind = time.Since(st.LastCommit).Seconds()
	}
	return bytes, behind
}
