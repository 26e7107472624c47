package postgres

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/cdcd-dev/cdcd/bookmark"
	"github.com/cdcd-dev/cdcd/capture"
	"github.com/cdcd-dev/cdcd/change"
	"github.com/cdcd-dev/cdcd/internal/failpoint"
	"github.com/cdcd-dev/cdcd/internal/fault"
	"github.com/cdcd-dev/cdcd/internal/preflight"
)

// SnapshotMode says whether a new slot's tables are copied before streaming.
type SnapshotMode string

const (
	// SnapshotInitial copies the tables once, when cdcd creates the slot: in chunks while the stream
	// runs (PostgreSQL 14+), or from the slot's exported snapshot in one transaction before it.
	SnapshotInitial SnapshotMode = "initial"
	// SnapshotNever streams only the changes after the slot's creation.
	SnapshotNever SnapshotMode = "never"
)

// Config is the postgres source kind's settings (source.postgres.*), and what a Reader needs.
type Config struct {
	// DSN is a libpq-style URL or key=value string for an ordinary connection; the replication
	// connection is derived from it.
	DSN string `mapstructure:"dsn" doc:"PostgreSQL connection URL or key=value string; the replication connection is derived from it"`
	// Slot is the logical replication slot (plugin pgoutput) cdcd reads from and advances.
	Slot string `mapstructure:"slot" doc:"the logical replication slot (pgoutput) cdcd reads and advances"`
	// Publication is the pgoutput publication that selects the captured tables.
	Publication string `mapstructure:"publication" doc:"the publication that selects the captured tables"`
	// Tables are schema-qualified; empty means every table (FOR ALL TABLES when cdcd creates the
	// publication, or whatever an existing publication holds).
	Tables []string `mapstructure:"tables" doc:"schema-qualified tables to capture; empty: every table of the publication"`
	// Snapshot says whether a slot cdcd creates is followed by a copy of the tables.
	Snapshot SnapshotMode `mapstructure:"snapshot" doc:"initial (copy existing rows once, when the slot is created) or never"`
	// SnapshotChunkRows is how many rows of a table one chunk of a snapshot copies (PostgreSQL 14+):
	// each chunk is a transaction of its own, and a restart continues after the last one durable.
	SnapshotChunkRows int `mapstructure:"snapshot_chunk_rows" doc:"rows per chunk of a snapshot; each chunk is its own transaction and a restart resumes after the last durable one"`
	// SnapshotParallel is how many chunks a snapshot reads at once, each on a connection of its own:
	// of several tables, or of key ranges of a large table.
	SnapshotParallel int `mapstructure:"snapshot_parallel" doc:"chunks a snapshot reads at once, each on its own connection: several tables, or key ranges of a large analysed table"`
	// SignalTable is a table (schema.table, in the publication) whose inserted rows ask for snapshots
	// while cdcd streams, for users without access to cdcd's HTTP endpoint: Debezium's signal table
	// (columns id, type and data; type execute-snapshot with data {"data-collections": [...]},
	// stop-snapshot, pause-snapshot, resume-snapshot).
	SignalTable string `mapstructure:"signal_table" doc:"schema.table whose inserted rows (id, type, data) start, stop, pause or resume snapshots, as Debezium's signals"`
	// Binary says in which form values travel: auto asks for binary pgoutput (PostgreSQL 14+) when
	// cdcd reads every column type of the publication's tables from it, off always asks for text.
	// Both give the same values.
	Binary BinaryMode `mapstructure:"binary" doc:"auto (binary pgoutput on PostgreSQL 14+ when cdcd reads every column type from it; the values are the same) or off (text)"`
	// Heartbeat is how long the stream may stay quiet before the reader emits a transactional
	// logical decoding message (PostgreSQL 14+), whose commit lets the slot be confirmed past WAL
	// that held nothing for the publication.
	Heartbeat time.Duration `mapstructure:"heartbeat" doc:"how long a quiet stream waits before a heartbeat lets the slot advance (PostgreSQL 14+)"`
	// AcceptGapTo, when it names exactly the slot's confirmed position, lets cdcd continue although
	// that position lies past the commit stream's resume position (a re-created slot, a restored
	// server): the transactions between them are then missing from Kafka for good. Without it such
	// a start is refused (ErrGap).
	AcceptGapTo string `mapstructure:"accept_gap_to" doc:"accept, once, a slot confirmed past the commit stream: its exact LSN, from the refusal"`
}

// Reader streams one database's committed transactions from a pgoutput slot. It implements
// capture.Source.
type Reader struct {
	cfg      Config
	log      *slog.Logger
	meta     *pgx.Conn // catalog look-ups; never used by two goroutines at once
	database string
	version  int // server_version_num
	tm       *pgtype.Map
	types    map[uint32]typeInfo // pg_type rows by OID, as read so far
	// systemID and timeline are the server's identity and current line of history (IDENTIFY_SYSTEM);
	// history is the timeline's history file, timelineStart where the timeline began, walEnd how
	// far the server's WAL reached when cdcd connected.
	systemID      string
	timeline      int32
	history       string
	timelineStart bookmark.LSN
	walEnd        bookmark.LSN

	acked        atomic.Uint64 // bookmark.LSN confirmed durable downstream
	serverWALEnd atomic.Uint64
	received     atomic.Uint64 // end LSN of the last transaction handed to the handler
	commitTime   atomic.Int64  // unix nanoseconds of the last transaction's commit

	// streaming is the replication connection while the stream runs: an acknowledgement cuts its
	// wait short (once: wakePending), so that a quiet stream confirms a durable position at once
	// rather than at its next once-a-second status.
	streaming   atomic.Pointer[pgconn.PgConn]
	wakePending atomic.Bool
	// statusEvery is how often a stream that keeps moving sends its status (0: every second).
	statusEvery time.Duration

	// copies is a running snapshot's progress; it makes the reader a capture.Copier.
	copies capture.CopyProgress

	requests chan snapshotCall // snapshot requests, for the stream's goroutine
}

var (
	_ capture.Source            = (*Reader)(nil)
	_ capture.Copier            = (*Reader)(nil)
	_ capture.SnapshotRequester = (*Reader)(nil)
)

// Copying implements capture.Copier.
func (r *Reader) Copying() []capture.TableCopy { return r.copies.Copying() }

// Stats are the reader's positions, for metrics.
type Stats struct {
	Acked, ServerWALEnd, Received bookmark.LSN
	LastCommit                    time.Time
}

// Stats returns the reader's current positions; safe from any goroutine.
func (r *Reader) Stats() Stats {
	s := Stats{
		Acked:        bookmark.LSN(r.acked.Load()),
		ServerWALEnd: bookmark.LSN(r.serverWALEnd.Load()),
		Received:     bookmark.LSN(r.received.Load()),
	}
	if n := r.commitTime.Load(); n != 0 {
		s.LastCommit = time.Unix(0, n)
	}
	return s
}

func connConfig(dsn string) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("source.postgres.dsn: %w", err)
	}
	for k, v := range sessionSettings {
		cfg.RuntimeParams[k] = v
	}
	setApplicationName(cfg.RuntimeParams)
	return cfg, nil
}

// setApplicationName names cdcd's connections "cdcd (pid N)", unless the DSN names them.
func setApplicationName(params map[string]string) {
	if params["application_name"] == "" {
		params["application_name"] = fmt.Sprintf("%s (pid %d)", applicationName, os.Getpid())
	}
}

// Open connects to the database and makes sure the publication exists and covers the configured
// tables, creating it when it is missing.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Reader, error) {
	if log == nil {
		log = slog.Default()
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 10 * time.Second
	}
	cc, err := connConfig(cfg.DSN)
	if err != nil {
		return nil, fault.Mark(err)
	}
	// The catalog connection first: its failure says whether waiting can help.
	meta, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, connectError(cfg.DSN, err)
	}
	if err := preflightProblems(ctx, cfg); err != nil {
		meta.Close(ctx)
		return nil, err
	}
	r := &Reader{cfg: cfg, log: log.With("source", "postgres", "slot", cfg.Slot), meta: meta, tm: pgtype.NewMap(), types: map[uint32]typeInfo{},
		requests: make(chan snapshotCall)}
	if err := meta.QueryRow(ctx, "SELECT current_database(), current_setting('server_version_num')::int").Scan(&r.database, &r.version); err != nil {
		meta.Close(ctx)
		return nil, fmt.Errorf("reading current_database() and server_version_num: %w", err)
	}
	if err := r.identify(ctx); err != nil {
		meta.Close(ctx)
		return nil, err
	}
	if err := r.ensurePublication(ctx); err != nil {
		meta.Close(ctx)
		return nil, err
	}
	return r, nil
}

// identify reads the server's system identifier, timeline and the timeline's history over a
// replication connection.
func (r *Reader) identify(ctx context.Context) error {
	rc, err := r.connectReplication(ctx)
	if err != nil {
		return err
	}
	defer rc.Close(context.WithoutCancel(ctx))
	sys, err := pglogrepl.IdentifySystem(ctx, rc)
	if err != nil {
		return fmt.Errorf("IDENTIFY_SYSTEM: %w", err)
	}
	r.systemID, r.timeline, r.walEnd = sys.SystemID, sys.Timeline, bookmark.LSN(sys.XLogPos)
	if r.timeline > 1 {
		res, err := pglogrepl.TimelineHistory(ctx, rc, r.timeline)
		if err != nil {
			return fmt.Errorf("reading the history of timeline %d: %w", r.timeline, err)
		}
		r.history = string(res.Content)
		entries := parseTimelineHistory(r.history)
		if len(entries) == 0 {
			return fmt.Errorf("the history of timeline %d is empty", r.timeline)
		}
		r.timelineStart = entries[len(entries)-1].end
	}
	return nil
}

// SourceID names what this reader captures: the server (its system identifier, which a restored
// physical backup keeps and any other cluster does not share), the database and the slot.
func (r *Reader) SourceID() string {
	return fmt.Sprintf("postgres/%s/%s/%s", r.systemID, r.database, r.cfg.Slot)
}

// Lineage implements capture.Source: the server's current timeline and where it began,
// "<timeline>@<LSN>". Timeline numbers alone repeat when two copies of a server are promoted
// independently; their starting points tell them apart.
func (r *Reader) Lineage() string { return formatLineage(r.timeline, r.timelineStart) }

func formatLineage(tli int32, start bookmark.LSN) string {
	return strconv.FormatInt(int64(tli), 10) + "@" + start.String()
}

func parseLineage(s string) (int32, bookmark.LSN, error) {
	t, l, ok := strings.Cut(s, "@")
	tli, err := strconv.ParseInt(t, 10, 32)
	if !ok || err != nil || tli < 1 {
		return 0, 0, fmt.Errorf("%q is not <timeline>@<LSN>", s)
	}
	start, err := bookmark.ParseLSN(l)
	if err != nil {
		return 0, 0, fmt.Errorf("%q is not <timeline>@<LSN>: %w", s, err)
	}
	return int32(tli), start, nil
}

// Close implements capture.Source.
func (r *Reader) Close(ctx context.Context) error { return r.meta.Close(ctx) }

// Ack implements capture.Source: end is a Commit.End.
func (r *Reader) Ack(end string) error {
	lsn, err := bookmark.ParseLSN(end)
	if err != nil {
		return err
	}
	r.advanceAck(lsn)
	return nil
}

func (r *Reader) advanceAck(lsn bookmark.LSN) {
	for {
		cur := r.acked.Load()
		if uint64(lsn) <= cur {
			return
		}
		if r.acked.CompareAndSwap(cur, uint64(lsn)) {
			break
		}
	}
	if rc := r.streaming.Load(); rc != nil && r.wakePending.CompareAndSwap(false, true) {
		_ = rc.Conn().SetReadDeadline(time.Now())
	}
}

// connectError names a failed connection and its fix. What a retry cannot cure (a wrong password, a
// role pg_hba.conf refuses, a database that does not exist, a certificate cdcd does not trust) is
// terminal; a server that is down, starting up or out of connections is waited for.
func connectError(dsn string, err error) error {
	tlsFailed := tlsFix(err) != ""
	err = fmt.Errorf("connecting to PostgreSQL (%s): %w; %s", redactDSN(dsn), err, connectFix(err))
	var pgErr *pgconn.PgError
	if tlsFailed || errors.As(err, &pgErr) && (strings.HasPrefix(pgErr.Code, "28") || pgErr.Code == "3D000") {
		return fault.Mark(err)
	}
	return err
}

// preflightProblems runs the checks of `cdcd validate` and turns their problems into one terminal
// error, so that cdcd run refuses to start with the same words. Slot states are left to Run, which
// waits for a slot that a dying predecessor still holds. An unreachable server is not terminal.
func preflightProblems(ctx context.Context, cfg Config) error {
	var rep preflight.Report
	if err := Check(ctx, CheckConfig{DSN: cfg.DSN, Slot: cfg.Slot, Publication: cfg.Publication, Tables: cfg.Tables}, &rep); err != nil {
		return err
	}
	var problems []string
	for _, f := range rep.Findings {
		if f.Severity != preflight.Problem || strings.HasPrefix(f.What, "slot ") {
			continue
		}
		if f.What == "connection" {
			return fmt.Errorf("%s (fix: %s)", f.Detail, f.Fix)
		}
		problems = append(problems, fmt.Sprintf("%s: %s (fix: %s)", f.What, f.Detail, f.Fix))
	}
	if len(problems) > 0 {
		return fault.Terminal("PostgreSQL is not ready for capture:\n  %s", strings.Join(problems, "\n  "))
	}
	return nil
}

// Flush confirms the acknowledged position to the server after Run has returned, when no stream is
// open to carry it (pg_replication_slot_advance). It never moves the slot backwards. It uses a
// connection of its own: a shutdown that interrupted a query on the reader's catalog connection has
// closed that one.
func (r *Reader) Flush(ctx context.Context) error {
	acked := bookmark.LSN(r.acked.Load())
	if acked == 0 {
		return nil
	}
	cc, err := connConfig(r.cfg.DSN)
	if err != nil {
		return err
	}
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return fmt.Errorf("connecting to confirm %s to slot %s: %w", acked, r.cfg.Slot, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for range 20 {
		var confirmed *string
		var active bool
		err = conn.QueryRow(ctx, "SELECT confirmed_flush_lsn::text, active FROM pg_replication_slots WHERE slot_name = $1", r.cfg.Slot).Scan(&confirmed, &active)
		if err != nil {
			return fmt.Errorf("reading slot %s: %w", r.cfg.Slot, err)
		}
		if confirmed != nil {
			if c, perr := bookmark.ParseLSN(*confirmed); perr == nil && c >= acked {
				return nil
			}
		}
		if !active {
			if _, err = conn.Exec(ctx, "SELECT pg_replication_slot_advance($1, $2::pg_lsn)", r.cfg.Slot, acked.String()); err == nil {
				r.log.Info("confirmed the durable position to the slot", "lsn", acked.String())
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("advancing slot %s to %s: %w", r.cfg.Slot, acked, err)
}

// SlotRetained returns how many bytes of WAL the slot keeps the server from recycling, queried on a
// connection of its own (conn), so it may run beside the stream.
func SlotRetained(ctx context.Context, conn *pgx.Conn, slot string) (int64, error) {
	var n *int64
	err := conn.QueryRow(ctx, "SELECT (pg_current_wal_lsn() - restart_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&n)
	if errors.Is(err, pgx.ErrNoRows) || n == nil {
		return 0, nil
	}
	return *n, err
}

func (r *Reader) ensurePublication(ctx context.Context) error {
	pub := pgx.Identifier{r.cfg.Publication}.Sanitize()
	var exists bool
	if err := r.meta.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", r.cfg.Publication).Scan(&exists); err != nil {
		return fmt.Errorf("looking up publication %s: %w", r.cfg.Publication, err)
	}
	if !exists {
		var sql string
		if len(r.cfg.Tables) == 0 {
			sql = "CREATE PUBLICATION " + pub + " FOR ALL TABLES"
		} else {
			quoted := make([]string, len(r.cfg.Tables))
			for i, t := range r.cfg.Tables {
				quoted[i] = quoteQualified(t)
			}
			sql = "CREATE PUBLICATION " + pub + " FOR TABLE " + strings.Join(quoted, ", ")
		}
		if _, err := r.meta.Exec(ctx, sql); err != nil {
			return fmt.Errorf("creating publication %s (%s): %w; create it as the tables' owner or a superuser, or run cdcd validate for the missing right", r.cfg.Publication, sql, err)
		}
		r.log.Info("created publication", "publication", r.cfg.Publication, "sql", sql)
	}
	var missing []string
	for _, t := range r.cfg.Tables {
		schema, table, _ := strings.Cut(t, ".")
		var in bool
		if err := r.meta.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication_tables
			WHERE pubname = $1 AND schemaname = $2 AND tablename = $3)`, r.cfg.Publication, schema, table).Scan(&in); err != nil {
			return fmt.Errorf("reading the tables of publication %s: %w", r.cfg.Publication, err)
		}
		if !in {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("publication %s does not include %s: run ALTER PUBLICATION %s ADD TABLE %s; as the tables' owner, or correct source.postgres.tables",
			r.cfg.Publication, strings.Join(missing, ", "), pub, strings.Join(missing, ", "))
	}
	rows, err := r.meta.Query(ctx, `SELECT pt.schemaname || '.' || pt.tablename FROM pg_publication_tables pt
		JOIN pg_namespace n ON n.nspname = pt.schemaname
		JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
		WHERE pt.pubname = $1 AND c.relreplident = 'd'
		  AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)`, r.cfg.Publication)
	if err != nil {
		return fmt.Errorf("checking replica identities: %w", err)
	}
	keyless, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("checking replica identities: %w", err)
	}
	for _, t := range keyless {
		r.log.Warn("table has no primary key and REPLICA IDENTITY DEFAULT: its updates and deletes cannot be keyed, and the source rejects them while it is published",
			"table", t, "fix", "add a primary key or ALTER TABLE "+quoteQualified(t)+" REPLICA IDENTITY FULL")
	}
	return nil
}

// slotState reads whether the slot exists, whether another connection holds it, and its confirmed
// position.
func (r *Reader) slotState(ctx context.Context) (exists bool, activePID int32, confirmed bookmark.LSN, err error) {
	var pid *int32
	var flushed *string
	err = r.meta.QueryRow(ctx, "SELECT active_pid, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", r.cfg.Slot).Scan(&pid, &flushed)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, 0, 0, nil
	}
	if err != nil {
		return false, 0, 0, fmt.Errorf("reading slot %s: %w", r.cfg.Slot, err)
	}
	if pid != nil {
		activePID = *pid
	}
	if flushed != nil {
		if confirmed, err = bookmark.ParseLSN(*flushed); err != nil {
			return false, 0, 0, fmt.Errorf("slot %s: %w", r.cfg.Slot, err)
		}
	}
	return true, activePID, confirmed, nil
}

// ErrSlotInUse is returned (wrapped) when another connection streams from the slot.
var ErrSlotInUse error = slotInUse{}

type slotInUse struct{}

func (slotInUse) Error() string { return "replication slot is in use" }

// Is makes a busy slot a capture.ErrInUse, which the daemon waits out for a while.
func (slotInUse) Is(target error) bool { return target == capture.ErrInUse }

// ErrGap is returned (wrapped, terminal) when the server cannot be shown to hold every transaction
// after the commit stream's resume position: the slot is gone or was confirmed past it, or the
// server's history branched off before it.
var ErrGap = errors.New("cannot prove that nothing between the commit stream and the slot is lost")

// Run implements capture.Source. With resume empty it starts from scratch: it creates the slot (and,
// with snapshot "initial", copies the tables from the slot's exported snapshot as one snapshot
// transaction) or, when the slot exists without a resume position and a snapshot is configured,
// drops it and starts over, since an earlier start never made its snapshot durable.
func (r *Reader) Run(ctx context.Context, from capture.Resume, h capture.Handler) error {
	resume := from.Position
	state, err := parseCopyState(from.State)
	if err != nil {
		return fault.Terminal("%v; it was not written by this version of cdcd", err)
	}
	exists, pid, confirmed, err := r.slotState(ctx)
	if err != nil {
		return err
	}
	if pid != 0 {
		return fmt.Errorf("slot %s: %w by the process with pid %d (another cdcd with the same source.postgres.slot?); stop it or choose another slot", r.cfg.Slot, ErrSlotInUse, pid)
	}
	rc, err := r.connectReplication(ctx)
	if err != nil {
		return err
	}
	defer rc.Close(context.WithoutCancel(ctx))

	var start bookmark.LSN
	switch {
	case resume != "":
		if start, err = bookmark.ParseLSN(resume); err != nil {
			return fmt.Errorf("resume position: %w", err)
		}
		if !exists {
			return fault.Terminal("slot %s does not exist, but the commit stream says cdcd wrote everything up to %s: %w; the WAL since then may be gone; to start over with a fresh snapshot, point kafka.commit_topic at a new topic (or delete the old one)", r.cfg.Slot, resume, ErrGap)
		}
		if err := r.proveContinuity(ctx, rc, start, from.Lineage, confirmed); err != nil {
			return err
		}
	case exists && r.cfg.Snapshot == SnapshotInitial:
		r.log.Warn("slot exists but nothing was ever written durably from it: an earlier start did not finish its snapshot; dropping the slot to start over")
		if err := pglogrepl.DropReplicationSlot(ctx, rc, r.cfg.Slot, pglogrepl.DropReplicationSlotOptions{Wait: true}); err != nil {
			return fmt.Errorf("dropping slot %s: %w", r.cfg.Slot, err)
		}
		exists = false
	}
	var snap *snapshotter
	if len(state.Tables) > 0 && resume != "" {
		snap = newSnapshotter(r, state, nil)
		r.log.Info("snapshot resumed", "table", state.Tables[0].qualified(), "chunks_copied", state.Tables[0].Chunks, "tables_left", len(state.Tables))
	}
	if !exists {
		if start, snap, err = r.createSlot(ctx, rc, h); err != nil {
			return err
		}
	}
	r.advanceAck(start)
	return r.stream(ctx, rc, start, h, snap)
}

// proveContinuity refuses to resume at start unless the server still holds every transaction after
// it: the history it was written on (lineage, a timeline) must lead to the server's current timeline
// through a switch point at or after start, and the slot must not be confirmed past start.
func (r *Reader) proveContinuity(ctx context.Context, rc *pgconn.PgConn, start bookmark.LSN, lineage string, confirmed bookmark.LSN) error {
	if lineage != "" && lineage != r.Lineage() {
		written, begun, err := parseLineage(lineage)
		if err != nil {
			return fault.Terminal("the commit stream's lineage: %v: %w; it was not written by cdcd for PostgreSQL", err, ErrGap)
		}
		end, ok := ancestorEnd(r.history, written, begun)
		switch {
		case !ok:
			return fault.Terminal("the commit stream was written on timeline %d (begun at %s), which is not in the history of this server's timeline %d: %w; the server is not the one cdcd read from (another copy or backup, promoted on its own). Start over with a fresh snapshot: point kafka.commit_topic at a new topic and drop slot %s",
				written, begun, r.timeline, ErrGap, r.cfg.Slot)
		case start > end:
			return fault.Terminal("the commit stream holds transactions up to %s on timeline %d, but this server's timeline %d branched off it at %s: %w; Kafka holds transactions this server no longer has (a failover or restore lost them). Start over with a fresh snapshot: point kafka.commit_topic at a new topic and drop slot %s",
				start, written, r.timeline, end, ErrGap, r.cfg.Slot)
		}
		r.log.Info("the server's timeline changed since the last durable position; it branched off after it, so nothing is lost", "from_timeline", written, "timeline", r.timeline, "switch", end.String(), "resume", start.String())
	}
	if r.walEnd != 0 && r.walEnd < start {
		return fault.Terminal("this server's WAL ends at %s, before %s, where the commit stream says cdcd read up to: %w; the server lost transactions that Kafka holds (restored from an older backup?). Start over with a fresh snapshot: point kafka.commit_topic at a new topic and drop slot %s",
			r.walEnd, start, ErrGap, r.cfg.Slot)
	}
	if confirmed > start {
		if r.cfg.AcceptGapTo == confirmed.String() {
			r.log.Warn("slot was confirmed past the commit stream's resume position; continuing as source.postgres.accept_gap_to says: transactions between them are missing from Kafka", "resume", start.String(), "slot", confirmed.String())
			return nil
		}
		return fault.Terminal("slot %s is confirmed up to %s, but the commit stream says cdcd wrote everything up to %s only: %w; transactions committed between them were never written to Kafka and the server will not send them again (the slot was dropped and re-created, or another process read from it, or the server was restored). Start over with a fresh snapshot (point kafka.commit_topic at a new topic and drop the slot), or accept the gap with --set source.postgres.accept_gap_to=%s",
			r.cfg.Slot, confirmed, start, ErrGap, confirmed)
	}
	return nil
}

// timelineEntry is one line of a timeline history file: timeline tli ended at end, where its child
// branched off.
type timelineEntry struct {
	tli int32
	end bookmark.LSN
}

// parseTimelineHistory reads a timeline history file ("<tli>\t<switch LSN>\t<reason>" per line,
// oldest first); lines it cannot read are left out.
func parseTimelineHistory(history string) []timelineEntry {
	var out []timelineEntry
	for _, line := range strings.Split(history, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		id, err := strconv.ParseInt(f[0], 10, 32)
		if err != nil {
			continue
		}
		lsn, err := bookmark.ParseLSN(f[1])
		if err != nil {
			continue
		}
		out = append(out, timelineEntry{int32(id), lsn})
	}
	return out
}

// ancestorEnd finds, in the history of the server's current timeline, the ancestor timeline tli
// that began at begun, and where it ended; ok is false when there is no such ancestor.
func ancestorEnd(history string, tli int32, begun bookmark.LSN) (end bookmark.LSN, ok bool) {
	var prev bookmark.LSN // timeline 1 begins at 0/0; each later one where its parent ended
	for _, e := range parseTimelineHistory(history) {
		if e.tli == tli && prev == begun {
			return e.end, true
		}
		prev = e.end
	}
	return 0, false
}

// replicationReadBuffer is how much of the stream one read from the socket may take. pgconn reads
// into its 8 KiB message buffer, a read for every dozen or so rows of a backlog; a larger buffer
// under it takes what the socket holds in one read (the message buffer is then filled by copying).
const replicationReadBuffer = 64 << 10

func (r *Reader) connectReplication(ctx context.Context) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(r.cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("source.postgres.dsn: %w", err)
	}
	for k, v := range sessionSettings {
		cfg.RuntimeParams[k] = v
	}
	setApplicationName(cfg.RuntimeParams)
	cfg.RuntimeParams["replication"] = "database"
	cfg.BuildFrontend = func(from io.Reader, to io.Writer) *pgproto3.Frontend {
		return pgproto3.NewFrontend(bufio.NewReaderSize(from, replicationReadBuffer), to)
	}
	rc, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil && tlsFix(err) != "" {
		return nil, connectError(r.cfg.DSN, err)
	}
	if err != nil {
		return nil, fmt.Errorf("opening the replication connection: %w; the role needs REPLICATION and pg_hba.conf must allow it (cdcd validate tells which)", err)
	}
	return rc, nil
}

// createSlot creates the slot and returns the position the stream starts from. For an initial
// snapshot on PostgreSQL 14+ it returns the snapshotter that copies the published tables in chunks
// while the stream runs; before 14, which cannot place chunks in the stream, it copies them here, as
// of the slot's consistent point, in one transaction.
func (r *Reader) createSlot(ctx context.Context, rc *pgconn.PgConn, h capture.Handler) (bookmark.LSN, *snapshotter, error) {
	chunked := r.cfg.Snapshot == SnapshotInitial && r.version >= 140000
	action := "NOEXPORT_SNAPSHOT"
	if r.cfg.Snapshot == SnapshotInitial && !chunked {
		action = "EXPORT_SNAPSHOT"
	}
	var state copyState
	if chunked {
		// The tables as the publication holds them when the slot is made; a table added later is
		// not copied (its rows arrive as they change).
		rows, err := r.meta.Query(ctx, "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1, 2", r.cfg.Publication)
		if err != nil {
			return 0, nil, fmt.Errorf("listing the published tables: %w", err)
		}
		if state.Tables, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (tableCopy, error) {
			t := newTableCopy("", "")
			return t, row.Scan(&t.Schema, &t.Name)
		}); err != nil {
			return 0, nil, fmt.Errorf("listing the published tables: %w", err)
		}
	}
	res, err := pglogrepl.CreateReplicationSlot(ctx, rc, r.cfg.Slot, "pgoutput", pglogrepl.CreateReplicationSlotOptions{SnapshotAction: action})
	if err != nil {
		return 0, nil, fmt.Errorf("creating replication slot %s: %w", r.cfg.Slot, err)
	}
	point, err := bookmark.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return 0, nil, fmt.Errorf("slot consistent point: %w", err)
	}
	r.log.Info("created replication slot", "consistent_point", point.String())
	switch {
	case chunked:
		names := make([]string, len(state.Tables))
		for i := range state.Tables {
			names[i] = state.Tables[i].qualified()
		}
		r.log.Info("snapshot started", "tables", names, "chunk_rows", r.cfg.SnapshotChunkRows, "parallel", r.cfg.SnapshotParallel)
		sn := newSnapshotter(r, state, nil)
		if !sn.active() {
			r.log.Info("snapshot complete")
			return point, nil, nil
		}
		return point, sn, nil
	case r.cfg.Snapshot == SnapshotInitial:
		if err := r.snapshot(ctx, res.SnapshotName, point, h); err != nil {
			return 0, nil, fmt.Errorf("initial snapshot: %w", err)
		}
	}
	return point, nil, nil
}

// snapshot copies every published table, as of the exported snapshot, as one transaction of Read
// changes that ends at the slot's consistent point: the stream continues exactly after it.
func (r *Reader) snapshot(ctx context.Context, name string, point bookmark.LSN, h capture.Handler) error {
	cc, err := connConfig(r.cfg.DSN)
	if err != nil {
		return err
	}
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return fmt.Errorf("connecting for the snapshot: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// The exported snapshot must be imported before anything else runs in this transaction.
	if _, err := conn.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+name+"'"); err != nil {
		return fmt.Errorf("importing snapshot %s: %w", name, err)
	}
	rows, err := conn.Query(ctx, `SELECT c.oid FROM pg_publication_tables pt
		JOIN pg_namespace n ON n.nspname = pt.schemaname
		JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
		WHERE pt.pubname = $1 ORDER BY pt.schemaname, pt.tablename`, r.cfg.Publication)
	if err != nil {
		return fmt.Errorf("listing the published tables: %w", err)
	}
	oids, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
	if err != nil {
		return fmt.Errorf("listing the published tables: %w", err)
	}
	txn := &change.Txn{ID: "snapshot", Position: point.String(), Snapshot: true}
	if err := h.Begin(ctx, txn); err != nil {
		return err
	}
	var index int64
	for _, oid := range oids {
		rel, err := r.describe(ctx, conn, oid, nil)
		if err != nil {
			return err
		}
		start := time.Now()
		n, err := r.copyTable(ctx, conn, rel, txn, &index, h)
		if err != nil {
			return fmt.Errorf("copying %s: %w", rel.table.QualifiedName(), err)
		}
		r.log.Info("snapshot copied table", "table", rel.table.QualifiedName(), "rows", n, "took", time.Since(start).Round(time.Millisecond))
	}
	if _, err := conn.Exec(ctx, "COMMIT"); err != nil {
		return err
	}
	return h.Commit(ctx, &change.Commit{Txn: txn, End: point.String(), Changes: index})
}

func (r *Reader) copyTable(ctx context.Context, conn *pgx.Conn, rel *relation, txn *change.Txn, index *int64, h capture.Handler) (int64, error) {
	// Text results, read row by row: the same decoding as the stream, in bounded memory.
	rr := conn.PgConn().ExecParams(ctx, selectFrom(rel), nil, nil, nil, []int16{pgtype.TextFormatCode})
	var n int64
	var sl slab
	for rr.NextRow() {
		row, err := decodeTextRow(r.tm, &sl, rel, rr.Values())
		if err != nil {
			rr.Close()
			return n, err
		}
		failpoint.Hit(ctx, "postgres.snapshot-row")
		if err := h.Change(ctx, &change.Change{Op: change.Read, Table: rel.table, After: row, Txn: txn, Index: *index}); err != nil {
			rr.Close()
			return n, err
		}
		*index++
		n++
	}
	_, err := rr.Close()
	return n, err
}

// selectFrom is a SELECT of every column of rel's table, in the relation's order.
func selectFrom(rel *relation) string {
	cols := make([]string, len(rel.table.Columns))
	for i, c := range rel.table.Columns {
		cols[i] = pgx.Identifier{c.Name}.Sanitize()
	}
	return "SELECT " + strings.Join(cols, ", ") + " FROM " + pgx.Identifier{rel.table.Schema, rel.table.Name}.Sanitize()
}

// decodeTextRow decodes one row of a text-format result of selectFrom as the stream decodes
// tuples; a nil value is NULL.
func decodeTextRow(tm *pgtype.Map, sl *slab, rel *relation, vals [][]byte) (change.Row, error) {
	row := make(change.Row, len(vals))
	for i, v := range vals {
		if v == nil {
			row[i] = change.Value{Kind: change.Null}
			continue
		}
		d, err := decodeText(tm, sl, rel.oids[i], v)
		if err != nil {
			return nil, fmt.Errorf("column %s: %w", rel.table.Columns[i].Name, err)
		}
		row[i] = change.Value{V: d}
	}
	return row, nil
}

// describe turns a Relation message (the shape of the rows at this WAL position, with the replica
// identity columns flagged) into a relation; with m nil it reads the table from the catalog as conn
// sees it and builds the message the stream would send.
func (r *Reader) describe(ctx context.Context, conn *pgx.Conn, oid uint32, m *pglogrepl.RelationMessage) (*relation, error) {
	// A catalog query that a shutdown interrupts closes its connection; tests stall one here.
	if failpoint.Hit(ctx, "postgres.slow-catalog-query") {
		_, _ = conn.Exec(ctx, "SELECT pg_sleep(3600)")
	}
	if m == nil {
		var err error
		if m, err = relationFromCatalog(ctx, conn, oid); err != nil {
			return nil, err
		}
	}
	var unknown []uint32
	for _, c := range m.Columns {
		if _, ok := r.types[c.DataType]; !ok {
			unknown = append(unknown, c.DataType)
		}
	}
	if len(unknown) > 0 {
		// Types outlive the tables that use them; what they are cannot change.
		rows, err := conn.Query(ctx, `SELECT t.oid, t.typname, CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE 0 END,
				coalesce(b.typtype, t.typtype) = 'e'
			FROM pg_type t LEFT JOIN pg_type b ON t.typtype = 'd' AND b.oid = t.typbasetype WHERE t.oid = ANY($1)`, unknown)
		if err != nil {
			return nil, fmt.Errorf("reading the column types of %s.%s: %w", m.Namespace, m.RelationName, err)
		}
		for rows.Next() {
			var t typeInfo
			var typOID uint32
			if err := rows.Scan(&typOID, &t.name, &t.baseOID, &t.enum); err != nil {
				rows.Close()
				return nil, err
			}
			r.types[typOID] = t
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("reading the column types of %s.%s: %w", m.Namespace, m.RelationName, err)
		}
	}
	var primaryKey []string
	if m.ReplicaIdentity == 'f' || m.ReplicaIdentity == 'n' {
		// The stream names no key columns under FULL (it flags them all) or NOTHING: the primary
		// key as the catalog has it now may fill in, where its columns are in the message.
		var err error
		if primaryKey, err = indexColumns(ctx, conn, oid, "indisprimary"); err != nil {
			return nil, err
		}
	}
	return newRelation(r.database, m, r.types, primaryKey, r.tm), nil
}

// relationFromCatalog builds the Relation message pgoutput would send for table oid as conn's
// snapshot of the catalog sees it: its columns, replica identity and identity columns.
func relationFromCatalog(ctx context.Context, conn *pgx.Conn, oid uint32) (*pglogrepl.RelationMessage, error) {
	m := &pglogrepl.RelationMessage{RelationID: oid}
	var ident string
	if err := conn.QueryRow(ctx, `SELECT n.nspname, c.relname, c.relreplident::text FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1`, oid).Scan(&m.Namespace, &m.RelationName, &ident); err != nil {
		return nil, fmt.Errorf("reading relation %d: %w", oid, err)
	}
	if ident != "" {
		m.ReplicaIdentity = ident[0]
	}
	rows, err := conn.Query(ctx, `SELECT a.attname, a.atttypid, a.atttypmod,
			CASE c.relreplident
				WHEN 'f' THEN true
				WHEN 'd' THEN EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary AND a.attnum = ANY(i.indkey::int2[]))
				WHEN 'i' THEN EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident AND a.attnum = ANY(i.indkey::int2[]))
				ELSE false END
		FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
		WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum`, oid)
	if err != nil {
		return nil, fmt.Errorf("reading the columns of %s.%s: %w", m.Namespace, m.RelationName, err)
	}
	for rows.Next() {
		c := &pglogrepl.RelationMessageColumn{}
		var identity bool
		if err := rows.Scan(&c.Name, &c.DataType, &c.TypeModifier, &identity); err != nil {
			rows.Close()
			return nil, err
		}
		if identity {
			c.Flags = 1
		}
		m.Columns = append(m.Columns, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the columns of %s.%s: %w", m.Namespace, m.RelationName, err)
	}
	m.ColumnNum = uint16(len(m.Columns))
	return m, nil
}

// stream runs the replication protocol from start until ctx ends or an error occurs.
func (r *Reader) stream(ctx context.Context, rc *pgconn.PgConn, start bookmark.LSN, h capture.Handler, snap *snapshotter) error {
	args := []string{"proto_version '1'", "publication_names '" + strings.ReplaceAll(r.cfg.Publication, "'", "''") + "'"}
	heartbeats := r.version >= 140000
	if heartbeats {
		// Logical decoding messages carry cdcd's heartbeats through the stream (PostgreSQL 14+).
		args = append(args, "messages 'true'")
	} else {
		r.log.Warn("PostgreSQL before 14 cannot carry heartbeats: a quiet publication on a busy server keeps WAL until its next change")
	}
	binaryValues, err := r.chooseBinary(ctx)
	if err != nil {
		return err
	}
	if binaryValues {
		args = append(args, "binary 'true'")
	}
	err = pglogrepl.StartReplication(ctx, rc, r.cfg.Slot, pglogrepl.LSN(start), pglogrepl.StartReplicationOptions{PluginArgs: args})
	if err != nil {
		return fmt.Errorf("starting replication from slot %s at %s: %w", r.cfg.Slot, start, err)
	}
	r.log.Info("streaming", "from", start.String())

	s := streamState{r: r, h: h, snap: snap, resume: start, relations: map[uint32]*relation{}, lastData: time.Now(),
		handed: handedOn{xids: map[uint32]bool{}, pruned: time.Now()}, heartbeats: heartbeats, binary: binaryValues}
	if snap != nil {
		snap.handed = &s.handed
		defer snap.close(ctx)
		if !heartbeats {
			return errors.New("a chunked snapshot needs PostgreSQL 14 or newer")
		}
	}
	var hb *pgx.Conn
	defer func() {
		if hb != nil {
			hb.Close(context.WithoutCancel(ctx))
		}
	}()
	// Reads wait under a read deadline (below); ending ctx cuts the current wait short.
	stopWake := context.AfterFunc(ctx, func() { _ = rc.Conn().SetReadDeadline(time.Now()) })
	defer stopWake()
	defer func() { _ = rc.Conn().SetReadDeadline(time.Time{}) }()
	// Status every second while the position moves; and, once the stream has been quiet for
	// quietAfter, at once for a position acknowledged since (at most every minQuietStatus), so that
	// the slot does not wait up to a second for the end of a burst.
	const quietAfter, minQuietStatus = 20 * time.Millisecond, 100 * time.Millisecond
	statusInterval := cmp.Or(r.statusEvery, time.Second)
	s.now = time.Now()
	s.lastRecv = s.now
	nextStatus := s.now.Add(statusInterval)
	lastStatus := s.now
	var sentAck uint64
	var deadline time.Time   // the connection's read deadline as last set
	var quietCheck time.Time // when to look again whether the stream is quiet; zero: not watching
	// quietFrom is when the stream counts as quiet, unless another message arrives first.
	quietFrom := func() time.Time { return maxTime(s.lastRecv.Add(quietAfter), lastStatus.Add(minQuietStatus)) }
	r.wakePending.Store(false)
	r.streaming.Store(rc)
	defer r.streaming.Store(nil)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		now := s.now
		if heartbeats && !s.inTxn && now.Sub(s.lastData) >= r.cfg.Heartbeat {
			// A quiet stream: a transactional message makes a commit travel through it, which may
			// be confirmed once everything before it is durable, so the slot does not pin WAL
			// written for other tables.
			if err := r.heartbeat(ctx, &hb); err != nil {
				r.log.Warn("heartbeat failed", "err", err)
			}
			s.lastData = now
		}
		acked := r.acked.Load()
		quiet := false
		if !quietCheck.IsZero() && !now.Before(quietCheck) {
			quietCheck = time.Time{}
			quiet = acked != sentAck && !now.Before(quietFrom())
		}
		// A load first: this runs for every message, and a swap would write the flag each time.
		if r.wakePending.Load() && r.wakePending.Swap(false) && acked != sentAck && !quiet {
			quietCheck = quietFrom()
			quiet = !now.Before(quietCheck)
		}
		if now.After(nextStatus) || s.replyRequested || quiet {
			// At least every ten seconds regardless, well within the server's wal_sender_timeout.
			if acked != sentAck || s.replyRequested || now.After(lastStatus.Add(10*time.Second)) {
				if err := pglogrepl.SendStandbyStatusUpdate(ctx, rc, pglogrepl.StandbyStatusUpdate{
					WALWritePosition: pglogrepl.LSN(acked), WALFlushPosition: pglogrepl.LSN(acked),
					WALApplyPosition: pglogrepl.LSN(acked),
				}); err != nil {
					return fmt.Errorf("sending status to the server: %w", err)
				}
				sentAck, lastStatus = acked, now
			}
			s.replyRequested = false
			nextStatus = now.Add(statusInterval)
			quietCheck = time.Time{}
		}
		if s.handed.due() && !s.inTxn {
			if err := s.pruneHanded(ctx); err != nil {
				return err
			}
		}
		select {
		case call := <-r.requests:
			call.reply <- s.snapshotRequest(ctx, call.req)
		default:
		}
		wake := nextStatus
		if !quietCheck.IsZero() && quietCheck.Before(wake) {
			wake = quietCheck
		}
		if s.snap != nil && !s.inTxn {
			if err := s.snap.next(ctx); err != nil {
				return err
			}
			if s.snap.active() && time.Now().Before(s.snap.retryAt) && s.snap.retryAt.Before(wake) {
				wake = s.snap.retryAt
			}
		}
		// A read deadline on the connection rather than a context per message: pgconn watches a
		// context with an allocation and a goroutine hand-off on every call (a fifth of all
		// allocations under load). The AfterFunc above ends the wait when ctx ends.
		// It changes about once a second: setting it per message would cost a timer update each.
		if !wake.Equal(deadline) {
			if err := rc.Conn().SetReadDeadline(wake); err != nil {
				return fmt.Errorf("setting the replication connection's read deadline: %w", err)
			}
			deadline = wake
		}
		msg, err := rc.ReceiveMessage(context.Background())
		s.now = time.Now()
		if err != nil {
			if pgconn.Timeout(err) && ctx.Err() == nil {
				// The deadline may have been an acknowledgement's, set from another goroutine:
				// set the loop's own again.
				deadline = time.Time{}
				continue
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("receiving from the replication connection: %w", err)
		}
		s.lastRecv = s.now
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			if err := s.copyData(ctx, m.Data); err != nil {
				return err
			}
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("the server ended replication: %w", pgconn.ErrorResponseToPgError(m))
		case *pgproto3.CopyDone:
			return errors.New("the server ended replication (CopyDone)")
		}
	}
}

// state is the source's state to record with the position reached: a snapshot's progress.
func (s *streamState) state() string {
	if s.snap == nil {
		return ""
	}
	return s.snap.encoded
}

// pruneHanded forgets the handed-on transactions a fresh snapshot shows visible, so that the set
// stays small between the snapshots of chunks (or while no snapshot runs, ready for one to start).
func (s *streamState) pruneHanded(ctx context.Context) error {
	var text string
	if err := s.r.meta.QueryRow(ctx, "SELECT txid_current_snapshot()::text").Scan(&text); err != nil {
		return fmt.Errorf("reading the server's snapshot: %w", err)
	}
	snap, err := parsePGSnapshot(text)
	if err != nil {
		return err
	}
	s.handed.prune(snap)
	return nil
}

type streamState struct {
	r              *Reader
	h              capture.Handler
	snap           *snapshotter    // nil when no snapshot runs
	heartbeats     bool            // the server sends logical decoding messages (14+)
	binary         bool            // values arrive in binary form where their type has a send function
	viaServer      map[string]bool // relations whose binary values of some column the server renders
	tuples         tupleReader     // reads row messages without copying their values
	slab           slab            // holds the text of the values decoded from them
	handed         handedOn
	xid            uint32       // the current transaction's
	beginLSN       bookmark.LSN // the current transaction's commit position
	watermark      string       // the snapshot watermark the current transaction carries
	resume         bookmark.LSN
	relations      map[uint32]*relation
	inTxn, skip    bool
	begun          bool // the handler has heard Begin for the current transaction
	lastData       time.Time
	lastRecv       time.Time // when the last message arrived
	now            time.Time // when the message being handled was received: one clock read per message
	txn            *change.Txn
	index          int64
	replyRequested bool
}

func (s *streamState) copyData(ctx context.Context, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return fmt.Errorf("parsing keepalive: %w", err)
		}
		// The server's position is for lag metrics only: it may lie beyond transactions that are
		// still being decoded, so it is never confirmed.
		s.r.serverWALEnd.Store(uint64(ka.ServerWALEnd))
		s.replyRequested = s.replyRequested || ka.ReplyRequested
		return nil
	case pglogrepl.XLogDataByteID:
	default:
		return nil
	}
	xld, err := pglogrepl.ParseXLogData(data[1:])
	if err != nil {
		return fmt.Errorf("parsing XLogData: %w", err)
	}
	s.lastData = s.now
	if uint64(xld.ServerWALEnd) > s.r.serverWALEnd.Load() {
		s.r.serverWALEnd.Store(uint64(xld.ServerWALEnd))
	}
	msg, err := parseMessage(xld.WALData, &s.tuples)
	if err != nil {
		return fmt.Errorf("parsing pgoutput message at %s: %w", xld.WALStart, err)
	}
	return s.message(ctx, msg)
}

// parseMessage parses a pgoutput message: row messages with tr (their values are views of data),
// the others with pglogrepl. pglogrepl indexes into what it is given without checking its length,
// so a short or empty message is turned into an error here rather than a panic.
func parseMessage(data []byte, tr *tupleReader) (msg pglogrepl.Message, err error) {
	if len(data) == 0 {
		return nil, errors.New("empty message")
	}
	switch data[0] {
	case 'I', 'U', 'D':
		m, err := tr.read(data)
		if err != nil {
			return nil, fmt.Errorf("malformed %q message of %d bytes: %w", data[0], len(data), err)
		}
		return m, nil
	}
	if err := checkLengths(data); err != nil {
		return nil, fmt.Errorf("malformed %q message of %d bytes: %w", data[0], len(data), err)
	}
	defer func() {
		if p := recover(); p != nil {
			msg, err = nil, fmt.Errorf("malformed %q message of %d bytes: %v", data[0], len(data), p)
		}
	}()
	return pglogrepl.Parse(data)
}

// checkLengths makes sure the lengths and counts of the messages pglogrepl parses (Truncate,
// logical decoding messages) lie within them, so that a length field cannot make it allocate what
// the message does not hold. Row messages are tupleReader's, which checks as it reads.
func checkLengths(data []byte) error {
	switch data[0] {
	case 'T': // relation count, options, then the relation ids
		if len(data) < 6 || int64(binary.BigEndian.Uint32(data[1:]))*4 > int64(len(data)-6) {
			return errors.New("more relations than the message holds")
		}
	case 'M': // transactional flag, LSN, prefix, then the content's length and the content
		end := bytes.IndexByte(data[min(10, len(data)):], 0)
		if len(data) < 10 || end < 0 {
			return errors.New("truncated logical decoding message")
		}
		p := 10 + end + 1
		if p+4 > len(data) || int64(binary.BigEndian.Uint32(data[p:])) > int64(len(data)-p-4) {
			return errors.New("a logical decoding message longer than the message")
		}
	}
	return nil
}

func (s *streamState) message(ctx context.Context, msg pglogrepl.Message) error {
	switch m := msg.(type) {
	case *pglogrepl.BeginMessage:
		s.inTxn, s.begun, s.index = true, false, 0
		s.xid, s.beginLSN, s.watermark = m.Xid, bookmark.LSN(m.FinalLSN), ""
		s.lastData = s.now
		// A transaction whose commit record starts before the resume position ended at or before
		// it: it is durable already.
		s.skip = bookmark.LSN(m.FinalLSN) < s.resume
		if s.skip {
			return nil
		}
		s.txn = &change.Txn{ID: fmt.Sprint(m.Xid), Position: bookmark.LSN(m.FinalLSN).String(), CommitTime: m.CommitTime}
		return nil
	case *pglogrepl.CommitMessage:
		s.inTxn = false
		if s.skip {
			s.skip = false
			return nil
		}
		end := bookmark.LSN(m.TransactionEndLSN)
		if !s.begun {
			if s.watermark != "" && s.snap != nil {
				// A chunk of the snapshot goes out exactly here, in place of its watermark.
				cut, err := s.snap.cut(ctx, s.h, s.watermark, s.beginLSN, end)
				if cut {
					s.r.received.Store(uint64(end))
					return err
				}
			}
			// Nothing for the handler (a heartbeat, or a transaction of logical messages only).
			// Seeing its commit proves that everything before it was sent: the handler may make
			// this position durable and acknowledge it, so that the slot advances past it.
			if p, ok := s.h.(capture.Progresser); ok {
				return p.Progress(ctx, end.String(), s.state())
			}
			return nil
		}
		err := s.h.Commit(ctx, &change.Commit{Txn: s.txn, End: end.String(), Changes: s.index, State: s.state()})
		s.r.received.Store(uint64(end))
		s.r.commitTime.Store(m.CommitTime.UnixNano())
		return err
	case *pglogrepl.LogicalDecodingMessage:
		if m.Prefix == watermarkPrefix && m.Transactional && !s.skip {
			s.watermark = string(m.Content)
		}
		return nil
	case *pglogrepl.RelationMessage:
		rel, err := s.r.describe(ctx, s.r.meta, m.RelationID, m)
		if err != nil {
			return err
		}
		if s.binary {
			s.binaryRelation(ctx, rel)
		}
		s.relations[m.RelationID] = rel
		if s.snap != nil {
			s.snap.relationChanged(rel)
		}
		return nil
	}
	if s.skip {
		return nil
	}
	switch m := msg.(type) {
	case *pglogrepl.InsertMessage:
		rel, err := s.relation(m.RelationID)
		if err != nil {
			return err
		}
		after, err := decodeTuple(s.r.tm, &s.slab, rel, m.Tuple, nil)
		if err != nil {
			return err
		}
		if err := s.emit(ctx, s.slab.change(change.Change{Op: change.Insert, Table: rel.table, After: after})); err != nil {
			return err
		}
		if s.r.cfg.SignalTable != "" && rel.table.QualifiedName() == s.r.cfg.SignalTable {
			s.signal(ctx, rel.table, after)
		}
		return nil
	case *pglogrepl.UpdateMessage:
		rel, err := s.relation(m.RelationID)
		if err != nil {
			return err
		}
		before, err := decodeTuple(s.r.tm, &s.slab, rel, m.OldTuple, nil)
		if err != nil {
			return err
		}
		var fill change.Row
		switch m.OldTupleType {
		case pglogrepl.UpdateMessageTupleTypeKey:
			keyOnly(rel, before)
		case pglogrepl.UpdateMessageTupleTypeOld:
			fill = before
		}
		after, err := decodeTuple(s.r.tm, &s.slab, rel, m.NewTuple, fill)
		if err != nil {
			return err
		}
		c := s.slab.change(change.Change{Op: change.Update, Table: rel.table, Before: before, After: after})
		c.KeyChanged = before != nil && rel.table.KeyDiffers(before, after)
		return s.emit(ctx, c)
	case *pglogrepl.DeleteMessage:
		rel, err := s.relation(m.RelationID)
		if err != nil {
			return err
		}
		before, err := decodeTuple(s.r.tm, &s.slab, rel, m.OldTuple, nil)
		if err != nil {
			return err
		}
		if m.OldTupleType == pglogrepl.DeleteMessageTupleTypeKey {
			keyOnly(rel, before)
		}
		return s.emit(ctx, s.slab.change(change.Change{Op: change.Delete, Table: rel.table, Before: before}))
	case *pglogrepl.TruncateMessage:
		for _, id := range m.RelationIDs {
			rel, err := s.relation(id)
			if err != nil {
				return err
			}
			if err := s.emit(ctx, &change.Change{Op: change.Truncate, Table: rel.table}); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *streamState) relation(id uint32) (*relation, error) {
	rel, ok := s.relations[id]
	if !ok {
		return nil, fmt.Errorf("change for relation %d arrived before its Relation message", id)
	}
	return rel, nil
}

// heartbeat emits a transactional logical decoding message on a connection of its own.
func (r *Reader) heartbeat(ctx context.Context, conn **pgx.Conn) error {
	if *conn == nil {
		cc, err := connConfig(r.cfg.DSN)
		if err != nil {
			return err
		}
		if *conn, err = pgx.ConnectConfig(ctx, cc); err != nil {
			return err
		}
	}
	if _, err := (*conn).Exec(ctx, "SELECT pg_logical_emit_message(true, 'cdcd.heartbeat', '')"); err != nil {
		(*conn).Close(ctx)
		*conn = nil
		return err
	}
	return nil
}

func (s *streamState) emit(ctx context.Context, c *change.Change) error {
	if !s.inTxn {
		return fmt.Errorf("%v change on %s outside a transaction", c.Op, c.Table.QualifiedName())
	}
	if !s.begun {
		if err := s.h.Begin(ctx, s.txn); err != nil {
			return err
		}
		s.begun = true
		s.handed.add(s.xid)
	}
	c.Txn, c.Index = s.txn, s.index
	s.index++
	if s.snap != nil {
		s.snap.observe(c)
	}
	return s.h.Change(ctx, c)
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
