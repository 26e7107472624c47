package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/cdcd-dev/cdcd/bookmark"
	"github.com/cdcd-dev/cdcd/capture"
	"github.com/cdcd-dev/cdcd/change"
	"github.com/cdcd-dev/cdcd/internal/failpoint"
	"github.com/cdcd-dev/cdcd/internal/fault"
)

// A snapshot copies tables in chunks while the stream runs (PostgreSQL 14+). Each chunk is read in
// key order under a REPEATABLE READ snapshot S; a transactional logical decoding message (the
// watermark) is written after the read, and the chunk is handed on as a transaction of its own
// exactly where the watermark's commit arrives in the stream. Between the read and that point the
// stream still delivers transactions, and each change they make to a row of the chunk is applied
// to the chunk's copy of the row before it goes out, so that every row of the chunk is the row as
// of the watermark: no change is lost under the copy and none is applied twice.
//
// That holds if every transaction the stream delivered before S was taken is visible in S. A
// transaction's commit record can be decoded before the transaction becomes visible to new
// snapshots (synchronous replication waits in between), so S is taken again later while any
// transaction S still sees as running has been handed on already, or is committed already.

// watermarkPrefix is the prefix of the logical decoding messages that place chunks in the stream.
const watermarkPrefix = "cdcd.snapshot"

// unkeyedChunkFactor bounds a table without a key, which is copied in one chunk held in memory: at
// most this many times the chunk size.
const unkeyedChunkFactor = 10

// copyState is a snapshot in progress: the tables still to copy, in order, and how far the first of
// them got. It travels as Commit.State and returns as Resume.State.
type copyState struct {
	Version int         `json:"v"`
	Tables  []tableCopy `json:"tables"`
	// Paused stops new chunks until a request resumes the copy.
	Paused bool `json:"paused,omitempty"`
}

// tableCopy is one table still to copy.
type tableCopy struct {
	Schema string `json:"schema"`
	Name   string `json:"name"`
	// After holds the text forms of the key columns of the last row copied; empty before the first
	// chunk.
	After  []string `json:"after,omitempty"`
	Chunks int64    `json:"chunks,omitempty"`
	Rows   int64    `json:"rows,omitempty"`
}

func (t *tableCopy) qualified() string { return t.Schema + "." + t.Name }

// progress is the table's entry in the reader's progress, before this run copies any of it.
func (t *tableCopy) progress() capture.TableCopy {
	return capture.TableCopy{Table: t.qualified(), Rows: t.Rows, Chunks: t.Chunks, Estimate: -1}
}

func parseCopyState(s string) (copyState, error) {
	var st copyState
	if s == "" {
		return st, nil
	}
	if err := json.Unmarshal([]byte(s), &st); err != nil {
		return st, fmt.Errorf("the snapshot state in the commit stream is not readable: %w", err)
	}
	if st.Version != 1 {
		return st, fmt.Errorf("the snapshot state in the commit stream has version %d; this build reads version 1", st.Version)
	}
	return st, nil
}

// encode is the state as Commit.State carries it: "" when no table is left.
func (st *copyState) encode() string {
	if len(st.Tables) == 0 {
		return ""
	}
	st.Version = 1
	b, _ := json.Marshal(st)
	return string(b)
}

// pgSnapshot is a transaction snapshot as txid_current_snapshot() gives it: transactions below xmin
// are finished, those from xmax on had not started, and xip were running.
type pgSnapshot struct {
	xmin, xmax uint64
	xip        map[uint64]bool
}

// parsePGSnapshot reads "xmin:xmax:xip,xip,...".
func parsePGSnapshot(s string) (pgSnapshot, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return pgSnapshot{}, fmt.Errorf("snapshot %q is not xmin:xmax:xip", s)
	}
	var snap pgSnapshot
	var err error
	if snap.xmin, err = strconv.ParseUint(parts[0], 10, 64); err != nil {
		return pgSnapshot{}, fmt.Errorf("snapshot %q: xmin: %w", s, err)
	}
	if snap.xmax, err = strconv.ParseUint(parts[1], 10, 64); err != nil {
		return pgSnapshot{}, fmt.Errorf("snapshot %q: xmax: %w", s, err)
	}
	if snap.xmin > snap.xmax {
		return pgSnapshot{}, fmt.Errorf("snapshot %q: xmin is after xmax", s)
	}
	snap.xip = map[uint64]bool{}
	if parts[2] != "" {
		for _, x := range strings.Split(parts[2], ",") {
			v, err := strconv.ParseUint(x, 10, 64)
			if err != nil {
				return pgSnapshot{}, fmt.Errorf("snapshot %q: running transaction %q: %w", s, x, err)
			}
			snap.xip[v] = true
		}
	}
	return snap, nil
}

// full widens xid, a 32-bit transaction id as the stream gives it, to the epoch-qualified id nearest
// the snapshot's xmax (transactions the stream delivers are recent, within 2^31 of it).
func (s pgSnapshot) full(xid uint32) uint64 {
	return uint64(int64(s.xmax) + int64(int32(xid-uint32(s.xmax))))
}

// sees says whether a transaction, committed, is visible in the snapshot.
func (s pgSnapshot) sees(xid uint32) bool {
	x := s.full(xid)
	return x < s.xmin || x < s.xmax && !s.xip[x]
}

// handedOn are the transactions the stream handed on that no snapshot has shown visible yet: a
// chunk's snapshot must see every one of them.
type handedOn struct {
	xids   map[uint32]bool
	pruned time.Time
}

func (ho *handedOn) add(xid uint32) { ho.xids[xid] = true }

// prune forgets the transactions snap sees, and reports whether it sees all of them.
func (ho *handedOn) prune(snap pgSnapshot) bool {
	all := true
	for xid := range ho.xids {
		if snap.sees(xid) {
			delete(ho.xids, xid)
		} else {
			all = false
		}
	}
	ho.pruned = time.Now()
	return all
}

// due says whether the set should be pruned with a fresh snapshot: it is large, or was last pruned a
// while ago.
func (ho *handedOn) due() bool {
	return len(ho.xids) > 50_000 || len(ho.xids) > 0 && time.Since(ho.pruned) > 5*time.Second
}

// pendingChunk is a chunk read and waiting for its watermark in the stream.
type pendingChunk struct {
	table    string // schema.table: the state's first table when the chunk was read
	rel      *relation
	token    string
	rows     []change.Row // in key order; nil where a row was deleted in the meantime
	byKey    map[string]int
	keyed    bool
	after    []string // the key texts of the last row read: where the chunk's range ends
	complete bool     // the table ends with this chunk
	shape    string
	read     time.Time
	dirty    bool // an unkeyed table changed in the meantime: the chunk must be read again
	bytes    int64
}

// snapshotter copies the tables of a copyState, chunk by chunk, on the stream's goroutine.
type snapshotter struct {
	r         *Reader
	state     copyState
	encoded   string // state, as every position handed on carries it
	chunkRows int
	conn      *pgx.Conn
	pending   *pendingChunk
	handed    *handedOn
	retryAt   time.Time
	nonce     uint64
	began     time.Time // when the current table's copy began
}

func newSnapshotter(r *Reader, st copyState, handed *handedOn) *snapshotter {
	sn := &snapshotter{r: r, state: st, chunkRows: r.cfg.SnapshotChunkRows, handed: handed, began: time.Now()}
	if sn.chunkRows <= 0 {
		sn.chunkRows = DefaultConfig().SnapshotChunkRows
	}
	sn.encoded = st.encode()
	sn.nonce = uint64(time.Now().UnixNano())
	progress := make([]capture.TableCopy, len(st.Tables))
	for i, tc := range st.Tables {
		progress[i] = tc.progress()
	}
	r.copyMu.Lock()
	r.copying, r.paused = progress, st.Paused
	r.copyMu.Unlock()
	return sn
}

func (sn *snapshotter) active() bool { return len(sn.state.Tables) > 0 }

func (sn *snapshotter) close(ctx context.Context) {
	if sn.conn != nil {
		sn.conn.Close(context.WithoutCancel(ctx))
		sn.conn = nil
	}
}

// next reads the next chunk and writes its watermark, unless a chunk waits for its watermark
// already, nothing is left to copy, or a snapshot was refused a moment ago.
func (sn *snapshotter) next(ctx context.Context) error {
	if sn.pending != nil || !sn.active() || sn.state.Paused || time.Now().Before(sn.retryAt) {
		return nil
	}
	if sn.conn == nil {
		cc, err := connConfig(sn.r.cfg.DSN)
		if err != nil {
			return err
		}
		if sn.conn, err = pgx.ConnectConfig(ctx, cc); err != nil {
			return fmt.Errorf("connecting for the snapshot: %w", err)
		}
	}
	p, err := sn.read(ctx)
	if err != nil {
		sn.close(ctx)
		return err
	}
	if p == nil {
		sn.retryAt = time.Now().Add(50 * time.Millisecond)
		return nil
	}
	failpoint.Hit(ctx, "postgres.snapshot-chunk-read")
	if _, err := sn.conn.Exec(ctx, "SELECT pg_logical_emit_message(true, $1, $2)", watermarkPrefix, p.token); err != nil {
		sn.close(ctx)
		return fmt.Errorf("writing the snapshot watermark: %w", err)
	}
	sn.pending = p
	return nil
}

// read takes a snapshot and reads the first table's next chunk under it; nil when the snapshot
// cannot be used yet (a transaction handed on already is not visible in it).
func (sn *snapshotter) read(ctx context.Context) (p *pendingChunk, err error) {
	conn, tc := sn.conn, &sn.state.Tables[0]
	if _, err := conn.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		return nil, err
	}
	defer func() {
		if _, rerr := conn.Exec(ctx, "ROLLBACK"); rerr != nil && err == nil {
			err = rerr
		}
	}()
	var text string
	var committed []int64
	if err := conn.QueryRow(ctx, `SELECT s::text, ARRAY(SELECT x::bigint FROM txid_snapshot_xip(s) x WHERE txid_status(x::bigint) = 'committed')
		FROM txid_current_snapshot() s`).Scan(&text, &committed); err != nil {
		return nil, fmt.Errorf("taking the snapshot: %w", err)
	}
	snap, err := parsePGSnapshot(text)
	if err != nil {
		return nil, err
	}
	if len(committed) > 0 {
		return nil, nil // committed, but not yet visible: its commit record may have been handed on
	}
	if !sn.handed.prune(snap) {
		return nil, nil
	}
	var oid uint32
	err = conn.QueryRow(ctx, `SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2`, tc.Schema, tc.Name).Scan(&oid)
	if errors.Is(err, pgx.ErrNoRows) {
		sn.r.log.Warn("a table to copy no longer exists; its snapshot ends here", "table", tc.qualified(), "rows", tc.Rows)
		sn.r.updateCopy(tc.qualified(), func(c *capture.TableCopy) { c.Done = true })
		sn.finishTable()
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("looking up %s: %w", tc.qualified(), err)
	}
	rel, err := sn.r.describe(ctx, conn, oid, nil)
	if err != nil {
		return nil, err
	}
	var estimate int64
	if err := conn.QueryRow(ctx, "SELECT reltuples::bigint FROM pg_class WHERE oid = $1", oid).Scan(&estimate); err != nil {
		return nil, fmt.Errorf("reading the row estimate of %s: %w", tc.qualified(), err)
	}
	sn.r.updateCopy(tc.qualified(), func(c *capture.TableCopy) {
		c.Estimate = max(estimate, -1) // -1: never analysed
		if c.Started.IsZero() {
			c.Started = time.Now()
		}
	})
	sn.nonce++
	p = &pendingChunk{table: tc.qualified(), rel: rel, token: fmt.Sprintf("%s/%s/%d/%d", sn.r.cfg.Slot, tc.qualified(), tc.Chunks+1, sn.nonce),
		byKey: map[string]int{}, keyed: len(rel.table.KeyIndexes) > 0, shape: shapeOf(rel), read: time.Now()}
	limit := sn.chunkRows
	if !p.keyed {
		limit = sn.chunkRows * unkeyedChunkFactor
	}
	sql, params, oids := chunkQuery(rel, tc.After, limit+1)
	rr := conn.PgConn().ExecParams(ctx, sql, params, oids, nil, []int16{pgtype.TextFormatCode})
	more := false
	for rr.NextRow() {
		vals := rr.Values()
		if len(p.rows) == limit {
			more = true
			break
		}
		row, err := sn.r.decodeTextRow(rel, vals)
		if err != nil {
			rr.Close()
			return nil, fmt.Errorf("copying %s: %w", tc.qualified(), err)
		}
		for _, v := range vals {
			p.bytes += int64(len(v))
		}
		if p.keyed {
			k, _ := keyString(rel.table, row)
			p.byKey[k] = len(p.rows)
			p.after = p.after[:0]
			for _, ki := range rel.table.KeyIndexes {
				p.after = append(p.after, string(vals[ki]))
			}
		}
		p.rows = append(p.rows, row)
	}
	if _, err := rr.Close(); err != nil {
		return nil, fmt.Errorf("copying %s: %w", tc.qualified(), err)
	}
	p.complete = !more
	if more && !p.keyed {
		return nil, fault.Terminal("table %s has neither a primary key nor a replica identity index, and more than %d rows: cdcd copies such a table in one piece held in memory. Add a primary key (or ALTER TABLE ... REPLICA IDENTITY USING INDEX on a unique index), or leave the table out of the publication", tc.qualified(), limit)
	}
	if len(p.rows) == 0 {
		p.after = tc.After
	}
	return p, nil
}

// chunkQuery selects the rows of rel after the key after (text forms; empty: from the start), in
// key order, at most limit of them; a table without a key is selected whole.
func chunkQuery(rel *relation, after []string, limit int) (sql string, params [][]byte, oids []uint32) {
	sql = selectFrom(rel)
	keys := rel.table.KeyIndexes
	if len(keys) == 0 {
		return sql + " LIMIT " + strconv.Itoa(limit), nil, nil
	}
	keyCols := make([]string, len(keys))
	for i, ki := range keys {
		keyCols[i] = pgx.Identifier{rel.table.Columns[ki].Name}.Sanitize()
	}
	if len(after) == len(keys) {
		marks := make([]string, len(keys))
		for i, ki := range keys {
			marks[i] = "$" + strconv.Itoa(i+1)
			params = append(params, []byte(after[i]))
			oids = append(oids, rel.oids[ki])
		}
		sql += " WHERE (" + strings.Join(keyCols, ", ") + ") > (" + strings.Join(marks, ", ") + ")"
	}
	return sql + " ORDER BY " + strings.Join(keyCols, ", ") + " LIMIT " + strconv.Itoa(limit), params, oids
}

// keyString encodes the key columns of row for equality; ok is false when a key value is missing
// from the image.
func keyString(t *change.Table, row change.Row) (string, bool) {
	var b strings.Builder
	for _, i := range t.KeyIndexes {
		if i >= len(row) || row[i].Kind != change.Present {
			return "", false
		}
		fmt.Fprintf(&b, "%T:%v\x00", row[i].V, row[i].V)
	}
	return b.String(), true
}

// shapeOf names a relation's columns and their types, to notice a change of the table's shape.
func shapeOf(rel *relation) string {
	var b strings.Builder
	for i, c := range rel.table.Columns {
		fmt.Fprintf(&b, "%s %d,", c.Name, rel.oids[i])
	}
	return b.String()
}

// relationChanged drops the pending chunk when the stream brings a new shape of its table: the
// rows read no longer match the changes that follow.
func (sn *snapshotter) relationChanged(rel *relation) {
	p := sn.pending
	if p != nil && rel.table.Schema == p.rel.table.Schema && rel.table.Name == p.rel.table.Name && shapeOf(rel) != p.shape {
		sn.r.log.Info("the table's shape changed while a chunk waited for its watermark; reading the chunk again", "table", p.table)
		sn.pending = nil
	}
}

// observe applies a change the stream hands on to the pending chunk's copy of the row it touches,
// so that the chunk holds each row as of its watermark.
func (sn *snapshotter) observe(c *change.Change) {
	p := sn.pending
	if p == nil || c.Table.Schema != p.rel.table.Schema || c.Table.Name != p.rel.table.Name {
		return
	}
	if c.Op == change.Truncate {
		clear(p.rows)
		clear(p.byKey)
		return
	}
	if !p.keyed {
		p.dirty = true
		return
	}
	remove := func(row change.Row) {
		if k, ok := keyString(p.rel.table, row); ok {
			if i, found := p.byKey[k]; found {
				p.rows[i] = nil
				delete(p.byKey, k)
			}
		} else {
			p.dirty = true
		}
	}
	switch c.Op {
	case change.Delete:
		remove(c.Before)
	case change.Update, change.Insert:
		if c.KeyChanged {
			remove(c.Before)
		}
		k, ok := keyString(p.rel.table, c.After)
		if !ok {
			p.dirty = true
			return
		}
		i, found := p.byKey[k]
		if !found {
			return // a row the chunk did not read: the change itself carries it
		}
		row := make(change.Row, len(c.After))
		for j, v := range c.After {
			if (v.Kind == change.Unchanged || v.Kind == change.Absent) && j < len(p.rows[i]) {
				v = p.rows[i][j]
			}
			row[j] = v
		}
		p.rows[i] = row
	}
}

// cut hands the pending chunk on as a transaction at the watermark's commit (pos, end), when token
// is its watermark; it reports whether it did.
func (sn *snapshotter) cut(ctx context.Context, h capture.Handler, token string, pos, end bookmark.LSN) (bool, error) {
	p := sn.pending
	if p == nil || token != p.token {
		return false, nil // a watermark of a chunk given up, or of an earlier run
	}
	sn.pending = nil
	if p.dirty || !sn.active() || sn.state.Tables[0].qualified() != p.table {
		sn.r.log.Debug("a change under the chunk could not be applied to it, or its copy was cancelled; reading it again if still due", "table", p.table)
		return false, nil
	}
	tc := &sn.state.Tables[0]
	txn := &change.Txn{ID: "snapshot", Position: pos.String(), Snapshot: true,
		Copy: &change.Copy{Table: tc.qualified(), Chunk: tc.Chunks + 1}}
	if err := h.Begin(ctx, txn); err != nil {
		return true, err
	}
	var n int64
	for _, row := range p.rows {
		if row == nil {
			continue
		}
		failpoint.Hit(ctx, "postgres.snapshot-row")
		if err := h.Change(ctx, &change.Change{Op: change.Read, Table: p.rel.table, After: row, Txn: txn, Index: n}); err != nil {
			return true, err
		}
		n++
	}
	tc.Chunks++
	tc.Rows += n
	tc.After = p.after
	txn.Copy.Rows, txn.Copy.Complete = tc.Rows, p.complete
	sn.r.updateCopy(tc.qualified(), func(c *capture.TableCopy) {
		c.Rows, c.Chunks, c.Done = tc.Rows, tc.Chunks, p.complete
		c.RunRows += n
		c.Bytes += p.bytes
	})
	sn.r.log.Debug("snapshot chunk", "table", tc.qualified(), "chunk", tc.Chunks, "rows", n, "waited", time.Since(p.read).Round(time.Millisecond))
	if p.complete {
		sn.finishTable()
	}
	sn.encoded = sn.state.encode()
	failpoint.Hit(ctx, "postgres.snapshot-chunk-commit")
	err := h.Commit(ctx, &change.Commit{Txn: txn, End: end.String(), Changes: n, State: sn.encoded})
	return true, err
}

// finishTable ends the first table's copy.
func (sn *snapshotter) finishTable() {
	tc := sn.state.Tables[0]
	sn.r.log.Info("snapshot copied table", "table", tc.qualified(), "rows", tc.Rows, "chunks", tc.Chunks, "took", time.Since(sn.began).Round(time.Millisecond))
	sn.state.Tables = sn.state.Tables[1:]
	sn.began = time.Now()
	sn.encoded = sn.state.encode()
	if !sn.active() {
		sn.r.log.Info("snapshot complete")
	}
}

// snapshotCall is a snapshot request on its way to the stream's goroutine, which owns the state.
type snapshotCall struct {
	req   capture.SnapshotRequest
	reply chan error
}

// RequestSnapshot implements capture.SnapshotRequester: the stream's goroutine takes the request
// between two transactions; the new state goes out with the next position it hands on.
func (r *Reader) RequestSnapshot(ctx context.Context, req capture.SnapshotRequest) error {
	call := snapshotCall{req: req, reply: make(chan error, 1)}
	select {
	case r.requests <- call:
	case <-ctx.Done():
		return fmt.Errorf("the PostgreSQL reader is not streaming now, so it cannot take the request; try again: %w", ctx.Err())
	}
	select {
	case err := <-call.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// snapshotRequest applies req to the snapshot's state, starting a snapshotter when none runs.
func (s *streamState) snapshotRequest(ctx context.Context, req capture.SnapshotRequest) error {
	if s.snap == nil {
		if req.Action != capture.SnapshotStart {
			return fmt.Errorf("no snapshot runs, so there is nothing to %s", req.Action)
		}
		if !s.heartbeats {
			return errors.New("snapshots on demand need PostgreSQL 14 or newer (logical decoding messages place the chunks in the stream)")
		}
		s.snap = newSnapshotter(s.r, copyState{}, &s.handed)
	}
	sn := s.snap
	switch req.Action {
	case capture.SnapshotStart:
		if len(req.Tables) == 0 {
			return errors.New("name the tables to copy, as schema.table")
		}
		var add []tableCopy
		for _, name := range req.Tables {
			schema, table, ok := strings.Cut(name, ".")
			if !ok || schema == "" || table == "" {
				return fmt.Errorf("%q is not schema.table", name)
			}
			var published bool
			if err := s.r.meta.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3)",
				s.r.cfg.Publication, schema, table).Scan(&published); err != nil {
				return fmt.Errorf("looking up %s in publication %s: %w", name, s.r.cfg.Publication, err)
			}
			if !published {
				return fmt.Errorf("%s is not in publication %s, so its changes are not captured and a copy could not be kept current: add it with ALTER PUBLICATION %s ADD TABLE %s, or correct the name (names are case-sensitive)",
					name, s.r.cfg.Publication, pgx.Identifier{s.r.cfg.Publication}.Sanitize(), pgx.Identifier{schema, table}.Sanitize())
			}
			if !slices.ContainsFunc(sn.state.Tables, func(t tableCopy) bool { return t.Schema == schema && t.Name == table }) &&
				!slices.ContainsFunc(add, func(t tableCopy) bool { return t.Schema == schema && t.Name == table }) {
				add = append(add, tableCopy{Schema: schema, Name: table})
			}
		}
		sn.state.Tables = append(sn.state.Tables, add...)
		s.r.copyMu.Lock()
		for _, t := range add {
			s.r.copying = append(s.r.copying, t.progress())
		}
		s.r.copyMu.Unlock()
		s.r.log.Info("snapshot requested", "tables", req.Tables, "queued", len(add), "tables_left", len(sn.state.Tables))
	case capture.SnapshotPause, capture.SnapshotResume:
		sn.state.Paused = req.Action == capture.SnapshotPause
		s.r.copyMu.Lock()
		s.r.paused = sn.state.Paused
		s.r.copyMu.Unlock()
		s.r.log.Info("snapshot "+map[bool]string{true: "paused", false: "resumed by request"}[sn.state.Paused], "tables_left", len(sn.state.Tables))
	case capture.SnapshotCancel:
		dropped := 0
		sn.state.Tables = slices.DeleteFunc(sn.state.Tables, func(t tableCopy) bool {
			drop := len(req.Tables) == 0 || slices.Contains(req.Tables, t.qualified())
			if drop {
				dropped++
				if sn.pending != nil && sn.pending.table == t.qualified() {
					sn.pending = nil
				}
			}
			return drop
		})
		s.r.copyMu.Lock()
		s.r.copying = slices.DeleteFunc(s.r.copying, func(c capture.TableCopy) bool {
			return !c.Done && (len(req.Tables) == 0 || slices.Contains(req.Tables, c.Table))
		})
		s.r.copyMu.Unlock()
		s.r.log.Info("snapshot cancelled", "tables", dropped, "tables_left", len(sn.state.Tables))
	default:
		return fmt.Errorf("unknown snapshot action %v", req.Action)
	}
	if sn.pending != nil && !sn.active() {
		sn.pending = nil
	}
	sn.encoded = sn.state.encode()
	return nil
}

// signal acts on a row inserted into the signal table, as a snapshot request. A signal cdcd cannot
// act on is logged and passed over: it is the users' data, and the stream goes on.
func (s *streamState) signal(ctx context.Context, table *change.Table, row change.Row) {
	field := func(name string) string {
		for i, c := range table.Columns {
			if c.Name == name && i < len(row) && row[i].Kind == change.Present {
				return fmt.Sprint(row[i].V)
			}
		}
		return ""
	}
	kind, data := field("type"), field("data")
	var payload struct {
		Tables []string `json:"data-collections"`
	}
	if data != "" {
		if err := json.Unmarshal([]byte(data), &payload); err != nil {
			s.r.log.Warn("a signal's data is not JSON; passed over", "signal_table", table.QualifiedName(), "id", field("id"), "err", err)
			return
		}
	}
	var req capture.SnapshotRequest
	switch kind {
	case "execute-snapshot":
		req = capture.SnapshotRequest{Action: capture.SnapshotStart, Tables: payload.Tables}
	case "stop-snapshot":
		req = capture.SnapshotRequest{Action: capture.SnapshotCancel, Tables: payload.Tables}
	case "pause-snapshot":
		req.Action = capture.SnapshotPause
	case "resume-snapshot":
		req.Action = capture.SnapshotResume
	default:
		s.r.log.Warn("a signal of a type cdcd does not know; passed over (known: execute-snapshot, stop-snapshot, pause-snapshot, resume-snapshot)",
			"signal_table", table.QualifiedName(), "id", field("id"), "type", kind)
		return
	}
	if err := s.snapshotRequest(ctx, req); err != nil {
		s.r.log.Warn("a signal could not be acted on; passed over", "signal_table", table.QualifiedName(), "id", field("id"), "type", kind, "err", err)
	}
}
