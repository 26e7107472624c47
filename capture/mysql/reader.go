package mysql

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/cdcd-dev/cdcd/capture"
	"github.com/cdcd-dev/cdcd/change"
	"github.com/cdcd-dev/cdcd/internal/fault"
	"github.com/cdcd-dev/cdcd/internal/preflight"
)

// ErrGap is returned (wrapped, terminal) when the server's binlogs no longer hold the position the
// commit stream resumes from, or never held it: the transactions in between cannot be read.
var ErrGap = errors.New("the server's binlogs do not hold the resume position")

// systemDatabases are never captured when source.mysql.tables is empty.
var systemDatabases = map[string]bool{"mysql": true, "information_schema": true, "performance_schema": true, "sys": true}

// Reader streams a MySQL or MariaDB server's committed transactions from its ROW binlog, as a
// replica would. It implements capture.Source.
type Reader struct {
	cfg      Config
	log      *slog.Logger
	flavor   Flavor
	host     string
	port     uint16
	serverID uint32
	identity string            // server_uuid (MySQL) or server_id and gtid_domain_id (MariaDB)
	gtids    bool              // the server writes GTIDs that a replica can resume from
	charsets map[uint64]string // collation id → character set
	tables   map[string]bool   // database.table to capture; empty: all but the system databases

	acked      atomic.Pointer[Position] // confirmed durable downstream
	received   atomic.Pointer[Position] // end of the last transaction handed to the handler
	head       atomic.Pointer[Position] // the last event read from the server
	commitTime atomic.Int64             // unix nanoseconds of the last handed transaction's commit

	chunks atomic.Pointer[chunker] // the running stream's snapshot, with signal_table
	// copies is a running snapshot's progress; it makes the reader a capture.Copier.
	copies capture.CopyProgress
}

var (
	_ capture.Source            = (*Reader)(nil)
	_ capture.Lagger            = (*Reader)(nil)
	_ capture.RetainedLogger    = (*Reader)(nil)
	_ capture.Copier            = (*Reader)(nil)
	_ capture.SnapshotRequester = (*Reader)(nil)
)

// Open connects to the server, checks every prerequisite of capture (refusing to start with the
// fix spelled out when one is missing) and reads the server's identity.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Reader, error) {
	if log == nil {
		log = slog.Default()
	}
	host, portText, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fault.Terminal("source.mysql.addr %q: %v; write it as host:port, e.g. 127.0.0.1:3306", cfg.Addr, err)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil {
		return nil, fault.Terminal("source.mysql.addr %q: the port is not a number", cfg.Addr)
	}
	conn, err := connect(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if err := preflightProblems(ctx, cfg); err != nil {
		return nil, err
	}
	vars, err := variables(conn, "version", "version_comment", "server_id", "server_uuid", "gtid_domain_id", "gtid_mode")
	if err != nil {
		return nil, err
	}
	r := &Reader{cfg: cfg, host: host, port: uint16(port), flavor: flavorOf(vars), charsets: map[uint64]string{}, tables: map[string]bool{}}
	id, _ := strconv.ParseUint(vars["server_id"], 10, 32)
	r.serverID = uint32(id)
	switch r.flavor {
	case FlavorMariaDB:
		r.identity = "server-" + vars["server_id"] + "/domain-" + vars["gtid_domain_id"]
		r.gtids = true // MariaDB always writes GTIDs
	default:
		r.identity = vars["server_uuid"]
		r.gtids = strings.EqualFold(vars["gtid_mode"], "ON")
	}
	r.log = log.With("source", string(r.flavor), "addr", cfg.Addr)
	res, err := conn.Execute("SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATIONS")
	if err != nil {
		return nil, fmt.Errorf("reading the server's collations: %w", err)
	}
	for i := range res.RowNumber() {
		id, _ := res.GetUint(i, 0)
		name, _ := res.GetString(i, 1)
		r.charsets[id] = strings.Clone(name)
	}
	for _, t := range cfg.Tables {
		r.tables[t] = true
	}
	return r, nil
}

func flavorOf(vars map[string]string) Flavor {
	if strings.Contains(strings.ToLower(vars["version"]+" "+vars["version_comment"]), "mariadb") {
		return FlavorMariaDB
	}
	return FlavorMySQL
}

// connect opens an ordinary connection. What a retry cannot cure (a wrong password, an unknown
// user) is terminal; a server that is down is waited for.
func connect(ctx context.Context, cfg Config) (*client.Conn, error) {
	conn, err := client.ConnectWithContext(ctx, cfg.Addr, cfg.User, cfg.Password, "", 10*time.Second)
	if err == nil {
		return conn, nil
	}
	err = fmt.Errorf("connecting to %s as %s: %w; %s", cfg.Addr, cfg.User, err, connectFix(err))
	var myErr *gomysql.MyError
	if errors.As(err, &myErr) && myErr.Code == gomysql.ER_ACCESS_DENIED_ERROR {
		return nil, fault.Mark(err)
	}
	return nil, err
}

// preflightProblems runs the checks of `cdcd validate` and turns their problems into one terminal
// error, so that cdcd run refuses to start with the same words.
func preflightProblems(ctx context.Context, cfg Config) error {
	var rep preflight.Report
	if err := Check(ctx, cfg.checkConfig(), &rep); err != nil {
		return err
	}
	var problems []string
	for _, f := range rep.Findings {
		if f.Severity != preflight.Problem {
			continue
		}
		if f.What == "connection" {
			return fmt.Errorf("%s (fix: %s)", f.Detail, f.Fix)
		}
		problems = append(problems, fmt.Sprintf("%s: %s (fix: %s)", f.What, f.Detail, f.Fix))
	}
	if len(problems) > 0 {
		return fault.Terminal("%s is not ready for capture:\n  %s", rep.Findings[0].Component, strings.Join(problems, "\n  "))
	}
	return nil
}

// SourceID implements capture.Source: the flavour and the server's identity.
func (r *Reader) SourceID() string { return string(r.flavor) + "/" + r.identity }

// Lineage implements capture.Source: how positions are spelt, "gtid" or "file"; a commit stream
// written in one cannot be resumed in the other.
func (r *Reader) Lineage() string {
	if r.gtids {
		return "gtid"
	}
	return "file"
}

// Ack implements capture.Source.
func (r *Reader) Ack(end string) error {
	p, err := ParsePosition(end)
	if err != nil {
		return err
	}
	for {
		cur := r.acked.Load()
		if cur != nil && !cur.before(p) {
			return nil
		}
		if r.acked.CompareAndSwap(cur, &p) {
			return nil
		}
	}
}

// Close implements capture.Source; the reader holds no connection between runs.
func (r *Reader) Close(context.Context) error { return nil }

// Lag implements capture.Lagger: bytes of binlog read past what is durable (within one binlog file;
// -1 across files) and how long ago the oldest transaction read but not yet durable committed.
func (r *Reader) Lag() (bytes int64, behind float64) {
	acked, head, received := r.acked.Load(), r.head.Load(), r.received.Load()
	if acked != nil && head != nil {
		if acked.File == head.File && head.Offset >= acked.Offset {
			bytes = int64(head.Offset - acked.Offset)
		} else if acked.before(*head) {
			bytes = -1
		}
	}
	if received != nil && (acked == nil || acked.before(*received)) {
		if n := r.commitTime.Load(); n != 0 {
			behind = time.Since(time.Unix(0, n)).Seconds()
		}
	}
	return bytes, behind
}

// RetainedLog implements capture.RetainedLogger: the bytes of binlog the server holds after the
// position cdcd confirmed, which cdcd will still read.
func (r *Reader) RetainedLog(ctx context.Context) (int64, error) {
	acked := r.acked.Load()
	if acked == nil {
		return 0, nil
	}
	conn, err := connect(ctx, r.cfg)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	res, err := conn.Execute("SHOW BINARY LOGS")
	if err != nil {
		return 0, err
	}
	var n int64
	for i := range res.RowNumber() {
		name, _ := res.GetString(i, 0)
		size, _ := res.GetInt(i, 1)
		switch {
		case name == acked.File:
			n += size - int64(acked.Offset)
		case name > acked.File:
			n += size
		}
	}
	return max(n, 0), nil
}

// current reads the server's position now: where a stream that starts without a commit stream
// begins.
func (r *Reader) current(ctx context.Context) (Position, error) {
	conn, err := connect(ctx, r.cfg)
	if err != nil {
		return Position{}, err
	}
	defer conn.Close()
	res, err := conn.Execute("SHOW MASTER STATUS")
	if err != nil {
		return Position{}, fmt.Errorf("reading the binlog position (SHOW MASTER STATUS): %w", err)
	}
	if res.RowNumber() == 0 {
		return Position{}, fault.Terminal("SHOW MASTER STATUS is empty: the binary log is off; set log_bin in the server's configuration and restart it")
	}
	var p Position
	file, _ := res.GetString(0, 0)
	off, _ := res.GetUint(0, 1)
	p.File, p.Offset = strings.Clone(file), uint32(off)
	if r.gtids {
		// The GTID state at exactly that file and offset.
		var q string
		if r.flavor == FlavorMariaDB {
			q = "SELECT BINLOG_GTID_POS(?, ?)"
			res, err = conn.Execute(q, p.File, p.Offset)
		} else {
			q = "SELECT @@GLOBAL.gtid_executed"
			res, err = conn.Execute(q)
		}
		if err != nil {
			return Position{}, fmt.Errorf("reading the GTID position (%s): %w", q, err)
		}
		g, _ := res.GetString(0, 0)
		p.GTIDs = strings.ReplaceAll(strings.Clone(g), "\n", "")
		if p.GTIDs == "" && r.flavor == FlavorMariaDB {
			// A server that has never written a GTID: an empty state resumes from the first binlog.
			return p, nil
		}
	}
	return p, nil
}

// Run implements capture.Source.
func (r *Reader) Run(ctx context.Context, from capture.Resume, h capture.Handler) error {
	var start Position
	var state copyState
	chunked := r.cfg.SignalTable != ""
	if from.Position == "" && r.cfg.Snapshot == SnapshotInitial && chunked {
		p, err := r.current(ctx)
		if err != nil {
			return err
		}
		start = p
		conn, err := connect(ctx, r.cfg)
		if err != nil {
			return err
		}
		tables, err := r.snapshotTables(conn)
		conn.Close()
		if err != nil {
			return err
		}
		for _, t := range tables {
			if db, name, _ := strings.Cut(t, "."); t != r.cfg.SignalTable {
				state.Tables = append(state.Tables, tableCopy{Database: db, Name: name})
			}
		}
		r.log.Info("snapshot started", "tables", len(state.Tables), "chunk_rows", r.cfg.SnapshotChunkRows, "from", start.String())
	} else if from.Position == "" && r.cfg.Snapshot == SnapshotInitial {
		p, err := r.snapshot(ctx, h)
		if err != nil {
			return err
		}
		start = p
	} else if from.Position == "" {
		p, err := r.current(ctx)
		if err != nil {
			return err
		}
		start = p
		r.log.Info("no commit stream yet: streaming from the server's current position (snapshot: never; existing rows are not copied)", "position", start.String())
	} else {
		p, err := ParsePosition(from.Position)
		if err != nil {
			return fault.Terminal("the commit stream's resume position: %w", err)
		}
		if from.Lineage != "" && from.Lineage != r.Lineage() {
			return fault.Terminal("%w: the commit stream's positions are %s positions and the server now gives %s positions (was gtid_mode changed?); start with a new commit topic to begin afresh",
				ErrGap, from.Lineage, r.Lineage())
		}
		start = p
		var err2 error
		if state, err2 = parseCopyState(from.State); err2 != nil {
			return fault.Terminal("%w", err2)
		}
		if len(state.Tables) > 0 {
			if !chunked {
				return fault.Terminal("the commit stream holds a snapshot in progress (%s next), but source.mysql.signal_table is not set: set it back to the table the snapshot used to finish the copy", state.Tables[0].qualified())
			}
			r.log.Info("snapshot resumed", "table", state.Tables[0].qualified(), "chunks_copied", state.Tables[0].Chunks, "tables_left", len(state.Tables))
		}
	}
	r.acked.CompareAndSwap(nil, &start)

	logger := r.log.With("component", "go-mysql")
	syncer := replication.NewBinlogSyncer(replication.BinlogSyncerConfig{
		ServerID: r.cfg.ServerID, Flavor: string(r.flavor), Host: r.host, Port: r.port,
		User: r.cfg.User, Password: r.cfg.Password,
		UseDecimal: true, TimestampStringLocation: time.UTC,
		HeartbeatPeriod: r.cfg.Heartbeat, ReadTimeout: 3*r.cfg.Heartbeat + 10*time.Second,
		// A lost connection ends Run; the daemon restarts from the durable position.
		DisableRetrySync: true, MaxReconnectAttempts: 1,
		// The pipeline queue downstream already overlaps reading with writing; a deep event cache
		// here only holds memory (10,240 rows events by default).
		EventCacheCount: 256,
		Logger:          slog.New(&levelAtLeast{h: logger.Handler(), min: slog.LevelWarn}),
	})
	defer syncer.Close()
	var (
		streamer *replication.BinlogStreamer
		err      error
	)
	gset, err := gomysql.ParseGTIDSet(string(r.flavor), start.GTIDs)
	if err != nil {
		return fault.Terminal("the resume position's GTID set %q: %w", start.GTIDs, err)
	}
	if start.GTIDs != "" {
		streamer, err = syncer.StartSyncGTID(gset.Clone())
	} else {
		streamer, err = syncer.StartSync(gomysql.Position{Name: start.File, Pos: start.Offset})
	}
	if err != nil {
		return r.streamError(err, start)
	}
	s := &stream{r: r, h: h, gset: gset, pos: start, tables: map[uint64]*table{}, useGTID: start.GTIDs != ""}
	runCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	if chunked {
		s.chunks = newChunker(r, state)
		r.chunks.Store(s.chunks)
		defer r.chunks.CompareAndSwap(s.chunks, nil)
		go s.chunks.run(runCtx, stop)
		s.chunks.mu.Lock()
		s.chunks.kick()
		s.chunks.mu.Unlock()
		if len(state.Tables) == 0 {
			r.copies.Reset(nil, false)
		}
	}
	r.log.Info("streaming", "from", start.String()) // requests are taken from here on
	for {
		ev, err := streamer.GetEvent(runCtx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if cause := context.Cause(runCtx); runCtx.Err() != nil && cause != nil {
				return cause
			}
			return r.streamError(err, start)
		}
		if err := s.event(runCtx, ev); err != nil {
			return err
		}
	}
}

// streamError names a failed binlog stream; a position the server does not hold is a terminal gap.
func (r *Reader) streamError(err error, start Position) error {
	var myErr *gomysql.MyError
	if errors.As(err, &myErr) && myErr.Code == gomysql.ER_MASTER_FATAL_ERROR_READING_BINLOG {
		return fault.Terminal("%w: %s (resuming from %s): the transactions after it were purged or never written on this server, so cdcd cannot prove nothing is lost; "+
			"restore the binlogs, or start with a new kafka.commit_topic to capture afresh from now", ErrGap, myErr.Message, start)
	}
	return fmt.Errorf("reading the binlog of %s: %w", r.cfg.Addr, err)
}

// stream is the state of one Run: the transaction being read and the tables seen.
type stream struct {
	r       *Reader
	h       capture.Handler
	gset    gomysql.GTIDSet // executed up to the last complete transaction
	useGTID bool
	pos     Position // the end of the last complete transaction
	file    string   // the binlog file being read
	tables  map[uint64]*table
	chunks  *chunker // a snapshot beside the stream, with signal_table

	inTxn      bool   // between a transaction's first event and its end
	standalone bool   // MariaDB: a single statement (DDL) without a commit event
	gtid       string // the transaction's GTID, "" without GTIDs
	beginPos   Position
	txn        *change.Txn
	index      int64
	commitTime time.Time
}

func (s *stream) event(ctx context.Context, ev *replication.BinlogEvent) error {
	hdr := ev.Header
	if s.file != "" && hdr.LogPos > 0 {
		s.r.head.Store(&Position{File: s.file, Offset: hdr.LogPos})
	}
	switch e := ev.Event.(type) {
	case *replication.RotateEvent:
		s.file = string(e.NextLogName)
	case *replication.GTIDEvent:
		next, err := e.GTIDNext()
		if err != nil {
			return fmt.Errorf("GTID event: %w", err)
		}
		s.begin(hdr, strings.TrimSpace(next.String()), false)
	case *replication.MariadbGTIDEvent:
		s.begin(hdr, e.GTID.String(), e.IsStandalone())
	case *replication.QueryEvent:
		q := strings.TrimSpace(string(e.Query))
		switch {
		case strings.EqualFold(q, "BEGIN"):
			if !s.inTxn {
				s.begin(hdr, "", false)
			}
		case strings.EqualFold(q, "COMMIT"), strings.EqualFold(q, "ROLLBACK"):
			// A transaction of non-transactional tables ends with a COMMIT (or, having written
			// some, ROLLBACK) statement instead of an XID.
			return s.commit(ctx, hdr)
		case s.inTxn && !s.standalone && (strings.HasPrefix(strings.ToUpper(q), "SAVEPOINT") || strings.HasPrefix(strings.ToUpper(q), "ROLLBACK TO")):
		default:
			// A statement outside BEGIN..COMMIT (DDL) is its own transaction. Its columns reach
			// later changes through their table maps, so nothing here is replayed.
			if s.chunks != nil {
				s.chunks.schemaChanged()
			}
			if !s.inTxn {
				s.begin(hdr, "", true)
			}
			return s.commit(ctx, hdr)
		}
	case *replication.XIDEvent:
		return s.commit(ctx, hdr)
	case *replication.TableMapEvent:
		return s.tableMap(e)
	case *replication.RowsEvent:
		return s.rows(ctx, ev.Header.EventType, e)
	case *replication.TransactionPayloadEvent:
		for _, inner := range e.Events {
			if err := s.event(ctx, inner); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *stream) begin(hdr *replication.EventHeader, gtid string, standalone bool) {
	s.inTxn, s.standalone, s.gtid = true, standalone, gtid
	s.beginPos = Position{File: s.file, Offset: hdr.LogPos - min(hdr.LogPos, hdr.EventSize)}
	s.txn, s.index = nil, 0
	s.commitTime = time.Unix(int64(hdr.Timestamp), 0).UTC()
}

func (s *stream) captured(schema, name string) bool {
	if len(s.r.tables) == 0 {
		return !systemDatabases[schema]
	}
	return s.r.tables[schema+"."+name]
}

func (s *stream) tableMap(tm *replication.TableMapEvent) error {
	signal := s.chunks != nil && string(tm.Schema)+"."+string(tm.Table) == s.r.cfg.SignalTable
	if !signal && !s.captured(string(tm.Schema), string(tm.Table)) {
		delete(s.tables, tm.TableID)
		return nil
	}
	sig := signature(tm)
	if t, ok := s.tables[tm.TableID]; ok && t.sig == sig {
		return nil
	}
	t, err := buildTable(tm, s.r.charsets)
	if err != nil {
		return fault.Mark(err)
	}
	t.signal = signal
	s.tables[tm.TableID] = t
	return nil
}

func (s *stream) rows(ctx context.Context, et replication.EventType, e *replication.RowsEvent) error {
	t, ok := s.tables[e.TableID]
	if !ok {
		return nil // a table cdcd does not capture
	}
	if !s.inTxn {
		return fmt.Errorf("a rows event of %s outside a transaction", t.t.QualifiedName())
	}
	var op change.Op
	switch et {
	case replication.WRITE_ROWS_EVENTv0, replication.WRITE_ROWS_EVENTv1, replication.WRITE_ROWS_EVENTv2, replication.MARIADB_WRITE_ROWS_COMPRESSED_EVENT_V1:
		op = change.Insert
	case replication.UPDATE_ROWS_EVENTv0, replication.UPDATE_ROWS_EVENTv1, replication.UPDATE_ROWS_EVENTv2, replication.MARIADB_UPDATE_ROWS_COMPRESSED_EVENT_V1, replication.PARTIAL_UPDATE_ROWS_EVENT:
		op = change.Update
	case replication.DELETE_ROWS_EVENTv0, replication.DELETE_ROWS_EVENTv1, replication.DELETE_ROWS_EVENTv2, replication.MARIADB_DELETE_ROWS_COMPRESSED_EVENT_V1:
		op = change.Delete
	default:
		return fmt.Errorf("rows event of type %s is not supported", et)
	}
	step := 1
	if op == change.Update {
		step = 2
	}
	if len(e.Rows)%step != 0 {
		return fmt.Errorf("an update event of %s with an odd number of row images", t.t.QualifiedName())
	}
	if t.signal {
		// cdcd's control table: its rows are watermarks and signals, not data.
		if op == change.Delete {
			return nil
		}
		for i := step - 1; i < len(e.Rows); i += step {
			row, err := t.decodeRow(e.Rows[i])
			if err != nil {
				return fault.Mark(err)
			}
			id, kind, data := t.field(row, "id"), t.field(row, "type"), t.field(row, "data")
			if op == change.Insert || id == s.chunks.watermarkID {
				s.chunks.signalRow(ctx, id, kind, data)
			}
		}
		return nil
	}
	if s.txn == nil {
		id := s.gtid
		if id == "" {
			id = s.beginPos.File + ":" + strconv.FormatUint(uint64(s.beginPos.Offset), 10)
		}
		s.txn = &change.Txn{ID: id, Position: s.beginPos.String(), CommitTime: s.commitTime}
		if err := s.h.Begin(ctx, s.txn); err != nil {
			return err
		}
	}
	for i := 0; i < len(e.Rows); i += step {
		c := &change.Change{Op: op, Table: t.t, Txn: s.txn, Index: s.index}
		row, err := t.decodeRow(e.Rows[i])
		if err != nil {
			return fault.Mark(err)
		}
		switch op {
		case change.Insert:
			c.After = row
		case change.Delete:
			c.Before = row
		case change.Update:
			c.Before = row
			if c.After, err = t.decodeRow(e.Rows[i+1]); err != nil {
				return fault.Mark(err)
			}
			c.KeyChanged = t.t.KeyDiffers(c.Before, c.After)
		}
		s.index++
		if s.chunks != nil {
			s.chunks.observe(c)
		}
		if err := s.h.Change(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

// commit ends the transaction at the event whose header is hdr: its changes go to the handler as
// one transaction, or, having none, the position is offered as progress.
func (s *stream) commit(ctx context.Context, hdr *replication.EventHeader) error {
	if !s.inTxn {
		return fmt.Errorf("a commit at %s:%d outside a transaction", s.file, hdr.LogPos)
	}
	if s.gtid != "" {
		if err := s.gset.Update(s.gtid); err != nil {
			return fmt.Errorf("adding GTID %s to %s: %w", s.gtid, s.gset, err)
		}
	}
	s.pos = Position{File: s.file, Offset: hdr.LogPos}
	if s.useGTID {
		s.pos.GTIDs = s.gset.String()
	}
	s.inTxn, s.standalone = false, false
	end := s.pos.String()
	handed := s.txn != nil
	if handed {
		txn := s.txn
		s.txn = nil
		if err := s.h.Commit(ctx, &change.Commit{Txn: txn, End: end, Changes: s.index, State: s.state()}); err != nil {
			return err
		}
		pos := s.pos
		s.r.received.Store(&pos)
		s.r.commitTime.Store(txn.CommitTime.UnixNano())
	}
	if s.chunks != nil && s.chunks.closing() {
		// The chunk goes out where its high watermark commits, after whatever else that
		// transaction held.
		placed, err := s.chunks.place(ctx, s.h, s.beginPos.String(), end)
		if err != nil || placed {
			return err
		}
	}
	if !handed {
		if p, ok := s.h.(capture.Progresser); ok {
			return p.Progress(ctx, end, s.state())
		}
	}
	return nil
}

// state is the source's state to record with the position reached: a snapshot's progress.
func (s *stream) state() string {
	if s.chunks == nil {
		return ""
	}
	return s.chunks.stateNow()
}

// levelAtLeast passes on go-mysql's records of at least min: its informational chatter would drown
// cdcd's own log.
type levelAtLeast struct {
	h   slog.Handler
	min slog.Level
}

func (l *levelAtLeast) Enabled(ctx context.Context, lv slog.Level) bool {
	return lv >= l.min && l.h.Enabled(ctx, lv)
}
func (l *levelAtLeast) Handle(ctx context.Context, r slog.Record) error { return l.h.Handle(ctx, r) }
func (l *levelAtLeast) WithAttrs(a []slog.Attr) slog.Handler {
	return &levelAtLeast{h: l.h.WithAttrs(a), min: l.min}
}
func (l *levelAtLeast) WithGroup(n string) slog.Handler {
	return &levelAtLeast{h: l.h.WithGroup(n), min: l.min}
}
