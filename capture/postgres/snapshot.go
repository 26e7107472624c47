package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
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

// copyState is a snapshot in progress: the tables still to copy, in order, and how far each got. It
// travels as Commit.State and returns as Resume.State.
type copyState struct {
	Version int         `json:"v"`
	Tables  []tableCopy `json:"tables"`
	// Paused stops new chunks until a request resumes the copy.
	Paused bool `json:"paused,omitempty"`
}

// copyStateVersion is the version of copyState this build writes; it reads it and version 1 (one
// key range per table).
const copyStateVersion = 2

// tableCopy is one table still to copy.
type tableCopy struct {
	Schema string `json:"schema"`
	Name   string `json:"name"`
	Chunks int64  `json:"chunks,omitempty"`
	Rows   int64  `json:"rows,omitempty"`
	// Split says the table's key ranges are decided; until then it has one range, unbounded.
	Split bool `json:"split,omitempty"`
	// Ranges are the key ranges still to copy, in key order; read in parallel when lanes allow.
	Ranges []keyRange `json:"ranges"`
	// After is version 1's position: the key texts of the last row copied.
	After []string `json:"after,omitempty"`
	// Until holds the key texts of the table's last row when its copy began: rows past it were
	// inserted since, and reach the consumer through the stream, so the copy ends there even while
	// writers keep appending.
	Until []string `json:"until,omitempty"`
}

// keyRange is a range of a table's rows by the first key column, From inclusive, To exclusive; nil
// is unbounded.
type keyRange struct {
	ID   int     `json:"id"`
	From *string `json:"from,omitempty"`
	To   *string `json:"to,omitempty"`
	// After holds the text forms of the key columns of the last row of the range copied; empty before
	// the range's first chunk.
	After []string `json:"after,omitempty"`
}

func newTableCopy(schema, name string) tableCopy {
	return tableCopy{Schema: schema, Name: name, Ranges: []keyRange{{}}}
}

func (t *tableCopy) qualified() string { return t.Schema + "." + t.Name }

// progress is the table's entry in the reader's progress, before this run copies any of it.
func (t *tableCopy) progress() capture.TableCopy {
	return capture.TableCopy{Table: t.qualified(), Rows: t.Rows, Chunks: t.Chunks, Estimate: -1}
}

// rangeIndex is the index of the range id in t.Ranges; -1 when it is copied already.
func (t *tableCopy) rangeIndex(id int) int {
	return slices.IndexFunc(t.Ranges, func(r keyRange) bool { return r.ID == id })
}

func parseCopyState(s string) (copyState, error) {
	var st copyState
	if s == "" {
		return st, nil
	}
	if err := json.Unmarshal([]byte(s), &st); err != nil {
		return st, fmt.Errorf("the snapshot state in the commit stream is not readable: %w", err)
	}
	switch st.Version {
	case 1:
		for i := range st.Tables {
			t := &st.Tables[i]
			t.Ranges, t.Split, t.After = []keyRange{{After: t.After}}, t.Chunks > 0, nil
		}
		st.Version = copyStateVersion
	case copyStateVersion:
		for _, t := range st.Tables {
			if len(t.Ranges) == 0 {
				return st, fmt.Errorf("the snapshot state in the commit stream lists table %s with no key range left to copy", t.qualified())
			}
		}
	default:
		return st, fmt.Errorf("the snapshot state in the commit stream has version %d; this build reads versions 1 and %d", st.Version, copyStateVersion)
	}
	return st, nil
}

// encode is the state as Commit.State carries it: "" when no table is left.
func (st *copyState) encode() string {
	if len(st.Tables) == 0 {
		return ""
	}
	st.Version = copyStateVersion
	b, _ := json.Marshal(st)
	return string(b)
}

// table is the entry of the table named qualified; nil when it is not (or no longer) to copy.
func (st *copyState) table(qualified string) *tableCopy {
	for i := range st.Tables {
		if st.Tables[i].qualified() == qualified {
			return &st.Tables[i]
		}
	}
	return nil
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

// seenBy reports whether snap sees every transaction of the set; it changes nothing, so that chunks
// read in parallel may ask at once.
func (ho *handedOn) seenBy(snap pgSnapshot) bool {
	for xid := range ho.xids {
		if !snap.sees(xid) {
			return false
		}
	}
	return true
}

// due says whether the set should be pruned with a fresh snapshot: it is large, or was last pruned a
// while ago.
func (ho *handedOn) due() bool {
	return len(ho.xids) > 50_000 || len(ho.xids) > 0 && time.Since(ho.pruned) > 5*time.Second
}

// pendingChunk is a chunk read and waiting for its watermark in the stream.
type pendingChunk struct {
	table    string // schema.table
	rangeID  int
	lane     int // the lane (connection) that read it; free again once the chunk is cut
	rel      *relation
	token    string
	rows     []change.Row // in key order; nil where a row was deleted in the meantime
	byKey    map[string]int
	keyed    bool
	after    []string // the key texts of the last row read: where the chunk's range ends
	complete bool     // the key range ends with this chunk
	shape    string
	read     time.Time
	dirty    bool // an unkeyed table changed in the meantime: the chunk must be read again
	bytes    int64
}

// snapshotter copies the tables of a copyState, chunk by chunk, on the stream's goroutine. Up to
// one chunk per lane waits for its watermark at a time; the chunks of free lanes are read in
// parallel, each lane on its own connection, while the stream waits.
type snapshotter struct {
	r         *Reader
	state     copyState
	encoded   string // state, as every position handed on carries it
	chunkRows int
	lanes     []lane
	pending   []*pendingChunk
	handed    *handedOn
	retryAt   time.Time
	nonce     uint64
	began     map[string]time.Time // when this run began copying each table
	// describeMu keeps the readers of parallel chunks from filling the reader's type cache at once.
	describeMu sync.Mutex
}

// lane is one connection reading chunks, with its own decoding state.
type lane struct {
	conn *pgx.Conn
	tm   *pgtype.Map
}

// chunkJob is a chunk to read: where its table's range stands, and its watermark's token.
type chunkJob struct {
	schema, name string
	rng          keyRange
	until        []string
	token        string
}

func newSnapshotter(r *Reader, st copyState, handed *handedOn) *snapshotter {
	sn := &snapshotter{r: r, state: st, chunkRows: r.cfg.SnapshotChunkRows, handed: handed, began: map[string]time.Time{}}
	if sn.chunkRows <= 0 {
		sn.chunkRows = DefaultConfig().SnapshotChunkRows
	}
	sn.lanes = make([]lane, max(r.cfg.SnapshotParallel, 1))
	sn.encoded = st.encode()
	sn.nonce = uint64(time.Now().UnixNano())
	progress := make([]capture.TableCopy, len(st.Tables))
	for i, tc := range st.Tables {
		progress[i] = tc.progress()
	}
	r.copies.Reset(progress, st.Paused)
	return sn
}

func (sn *snapshotter) active() bool { return len(sn.state.Tables) > 0 }

func (sn *snapshotter) close(ctx context.Context) {
	for i := range sn.lanes {
		sn.closeLane(ctx, i)
	}
}

func (sn *snapshotter) closeLane(ctx context.Context, i int) {
	if sn.lanes[i].conn != nil {
		sn.lanes[i].conn.Close(context.WithoutCancel(ctx))
		sn.lanes[i].conn = nil
	}
}

// dropPending forgets the chunks waiting for their watermarks that drop says to.
func (sn *snapshotter) dropPending(drop func(*pendingChunk) bool) {
	sn.pending = slices.DeleteFunc(sn.pending, drop)
}

// freeLanes are the lanes with no chunk waiting for its watermark.
func (sn *snapshotter) freeLanes() []int {
	var free []int
	for i := range sn.lanes {
		if !slices.ContainsFunc(sn.pending, func(p *pendingChunk) bool { return p.lane == i }) {
			free = append(free, i)
		}
	}
	return free
}

// next reads the next chunks, one on each free lane, and writes their watermarks, unless nothing is
// left to read, the copy is paused, or a snapshot was refused a moment ago.
func (sn *snapshotter) next(ctx context.Context) error {
	if !sn.active() || sn.state.Paused || time.Now().Before(sn.retryAt) {
		return nil
	}
	free := sn.freeLanes()
	if len(free) == 0 {
		return nil
	}
	jobs, err := sn.plan(ctx, len(free))
	if err != nil || len(jobs) == 0 {
		return err
	}
	type result struct {
		p    *pendingChunk
		gone bool
		err  error
	}
	results := make([]result, len(jobs))
	var wg sync.WaitGroup
	for i, job := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, gone, err := sn.readLane(ctx, free[i], job)
			results[i] = result{p, gone, err}
		}()
	}
	wg.Wait()
	var errs []error
	for i, res := range results {
		switch {
		case res.err != nil:
			sn.closeLane(ctx, free[i])
			errs = append(errs, res.err)
		case res.gone:
			if tc := sn.state.table(jobs[i].schema + "." + jobs[i].name); tc != nil {
				sn.r.log.Warn("a table to copy no longer exists; its snapshot ends here", "table", tc.qualified(), "rows", tc.Rows)
				sn.r.copies.Update(tc.qualified(), func(c *capture.TableCopy) { c.Done = true })
				sn.finishTable(tc.qualified())
			}
		case res.p == nil:
			sn.retryAt = time.Now().Add(50 * time.Millisecond)
		default:
			res.p.lane = free[i]
			sn.pending = append(sn.pending, res.p)
		}
	}
	return errors.Join(errs...)
}

// plan picks up to n key ranges to read next, in copy order, that no chunk waits for; a table's
// ranges are decided when it first comes up.
func (sn *snapshotter) plan(ctx context.Context, n int) ([]chunkJob, error) {
	var jobs []chunkJob
	for ti := range sn.state.Tables {
		tc := &sn.state.Tables[ti]
		if len(jobs) == n {
			break
		}
		if !tc.Split {
			if err := sn.bound(ctx, tc); err != nil {
				return nil, err
			}
			if err := sn.split(ctx, tc); err != nil {
				return nil, err
			}
		}
		if _, ok := sn.began[tc.qualified()]; !ok {
			sn.began[tc.qualified()] = time.Now()
		}
		for _, rg := range tc.Ranges {
			if len(jobs) == n {
				break
			}
			if slices.ContainsFunc(sn.pending, func(p *pendingChunk) bool { return p.table == tc.qualified() && p.rangeID == rg.ID }) {
				continue
			}
			sn.nonce++
			rg.After = slices.Clone(rg.After)
			jobs = append(jobs, chunkJob{schema: tc.Schema, name: tc.Name, rng: rg, until: tc.Until,
				token: fmt.Sprintf("%s/%s/%d/%d/%d", sn.r.cfg.Slot, tc.qualified(), rg.ID, tc.Chunks+1, sn.nonce)})
		}
	}
	return jobs, nil
}

// bound reads the key of the last row of a table whose copy begins, where the copy will end.
func (sn *snapshotter) bound(ctx context.Context, tc *tableCopy) error {
	if tc.Chunks > 0 || len(tc.Ranges) != 1 || len(tc.Ranges[0].After) > 0 {
		return nil // begun under a build that did not bound copies
	}
	var oid uint32
	err := sn.r.meta.QueryRow(ctx, `SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2`, tc.Schema, tc.Name).Scan(&oid)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil // gone: the chunk read says so
	}
	if err != nil {
		return fmt.Errorf("looking up %s: %w", tc.qualified(), err)
	}
	rel, err := sn.r.describe(ctx, sn.r.meta, oid, nil)
	if err != nil {
		return err
	}
	keys := rel.table.KeyIndexes
	if len(keys) == 0 {
		return nil
	}
	cols := make([]string, len(keys))
	desc := make([]string, len(keys))
	for i, ki := range keys {
		cols[i] = pgx.Identifier{rel.table.Columns[ki].Name}.Sanitize()
		desc[i] = cols[i] + " DESC"
	}
	q := "SELECT " + strings.Join(cols, ", ") + " FROM " + pgx.Identifier{tc.Schema, tc.Name}.Sanitize() + " ORDER BY " + strings.Join(desc, ", ") + " LIMIT 1"
	rr := sn.r.meta.PgConn().ExecParams(ctx, q, nil, nil, nil, []int16{pgtype.TextFormatCode})
	for rr.NextRow() {
		for _, v := range rr.Values() {
			tc.Until = append(tc.Until, string(v))
		}
	}
	if _, err := rr.Close(); err != nil {
		return fmt.Errorf("reading the last key of %s: %w", tc.qualified(), err)
	}
	return nil
}

// split decides the key ranges of a table about to be copied: with more than one lane, a table the
// statistics expect to span several chunks is cut into as many ranges as there are lanes, at bounds
// of the histogram of its first key column. Only columns of types without a collation are cut (a
// range's bounds must sort alike wherever they are compared); other tables, and tables never
// analysed, are read as one range.
func (sn *snapshotter) split(ctx context.Context, tc *tableCopy) error {
	tc.Split = true
	if len(sn.lanes) < 2 || tc.Chunks > 0 || len(tc.Ranges) != 1 || len(tc.Ranges[0].After) > 0 {
		return nil
	}
	var column string
	var typeName string
	var estimate int64
	err := sn.r.meta.QueryRow(ctx, `SELECT a.attname, format_type(a.atttypid, NULL), c.reltuples::bigint
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_index i ON i.indrelid = c.oid AND CASE c.relreplident WHEN 'i' THEN i.indisreplident ELSE i.indisprimary END
		JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = (SELECT min(k) FROM unnest(i.indkey::int2[]) k)
		JOIN pg_type t ON t.oid = a.atttypid
		WHERE n.nspname = $1 AND c.relname = $2 AND c.relreplident IN ('d', 'i', 'f') AND t.typcollation = 0`,
		tc.Schema, tc.Name).Scan(&column, &typeName, &estimate)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil // no key, or a collatable first key column: one range
	}
	if err != nil {
		return fmt.Errorf("reading the key of %s to split its copy: %w", tc.qualified(), err)
	}
	parts := min(int64(len(sn.lanes)), estimate/int64(sn.chunkRows))
	if parts < 2 {
		return nil
	}
	// Sorted as the column's type sorts (not as the text forms would), so that the ranges neither
	// overlap nor leave gaps.
	rows, err := sn.r.meta.Query(ctx, fmt.Sprintf(`SELECT h.b::text AS bound FROM (SELECT DISTINCT unnest(histogram_bounds::text::%s[]) AS b
		FROM pg_stats WHERE schemaname = $1 AND tablename = $2 AND attname = $3 AND NOT inherited) h ORDER BY h.b`, typeName),
		tc.Schema, tc.Name, column)
	if err != nil {
		return fmt.Errorf("reading the statistics of %s to split its copy: %w", tc.qualified(), err)
	}
	bounds, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("reading the statistics of %s to split its copy: %w", tc.qualified(), err)
	}
	tc.Ranges = splitRanges(bounds, int(parts))
	if len(tc.Ranges) > 1 {
		sn.r.log.Info("snapshot reads the table in key ranges", "table", tc.qualified(), "ranges", len(tc.Ranges), "column", column)
	}
	return nil
}

// splitRanges cuts the key space into parts ranges at evenly spaced bounds of a histogram (sorted,
// distinct); fewer when the histogram is short.
func splitRanges(bounds []string, parts int) []keyRange {
	var cuts []string
	for i := 1; i < parts; i++ {
		j := i * len(bounds) / parts
		if j > 0 && j < len(bounds) && (len(cuts) == 0 || cuts[len(cuts)-1] != bounds[j]) {
			cuts = append(cuts, bounds[j])
		}
	}
	ranges := make([]keyRange, len(cuts)+1)
	for i := range ranges {
		ranges[i].ID = i
		if i > 0 {
			ranges[i].From = &cuts[i-1]
		}
		if i < len(cuts) {
			ranges[i].To = &cuts[i]
		}
	}
	return ranges
}

// readLane reads job's chunk on lane i and writes its watermark; nil when the snapshot cannot be
// used yet; gone when the table no longer exists.
func (sn *snapshotter) readLane(ctx context.Context, i int, job chunkJob) (*pendingChunk, bool, error) {
	ln := &sn.lanes[i]
	if ln.conn == nil {
		cc, err := connConfig(sn.r.cfg.DSN)
		if err != nil {
			return nil, false, err
		}
		if ln.conn, err = pgx.ConnectConfig(ctx, cc); err != nil {
			return nil, false, fmt.Errorf("connecting for the snapshot: %w", err)
		}
		ln.tm = pgtype.NewMap()
	}
	p, gone, err := sn.read(ctx, ln, job)
	if p == nil || err != nil {
		return nil, gone, err
	}
	failpoint.Hit(ctx, "postgres.snapshot-chunk-read")
	if _, err := ln.conn.Exec(ctx, "SELECT pg_logical_emit_message(true, $1, $2)", watermarkPrefix, p.token); err != nil {
		return nil, false, fmt.Errorf("writing the snapshot watermark: %w", err)
	}
	return p, false, nil
}

// read takes a snapshot and reads job's chunk under it; nil when the snapshot cannot be used yet (a
// transaction handed on already is not visible in it), gone when the table no longer exists.
func (sn *snapshotter) read(ctx context.Context, ln *lane, job chunkJob) (p *pendingChunk, gone bool, err error) {
	conn, qualified := ln.conn, job.schema+"."+job.name
	if _, err := conn.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		return nil, false, err
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
		return nil, false, fmt.Errorf("taking the snapshot: %w", err)
	}
	snap, err := parsePGSnapshot(text)
	if err != nil {
		return nil, false, err
	}
	if len(committed) > 0 {
		return nil, false, nil // committed, but not yet visible: its commit record may have been handed on
	}
	if !sn.handed.seenBy(snap) {
		return nil, false, nil
	}
	var oid uint32
	err = conn.QueryRow(ctx, `SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2`, job.schema, job.name).Scan(&oid)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("looking up %s: %w", qualified, err)
	}
	sn.describeMu.Lock()
	rel, err := sn.r.describe(ctx, conn, oid, nil)
	sn.describeMu.Unlock()
	if err != nil {
		return nil, false, err
	}
	var estimate int64
	if err := conn.QueryRow(ctx, "SELECT reltuples::bigint FROM pg_class WHERE oid = $1", oid).Scan(&estimate); err != nil {
		return nil, false, fmt.Errorf("reading the row estimate of %s: %w", qualified, err)
	}
	sn.r.copies.Update(qualified, func(c *capture.TableCopy) {
		c.Estimate = max(estimate, -1) // -1: never analysed
		if c.Started.IsZero() {
			c.Started = time.Now()
		}
	})
	p = &pendingChunk{table: qualified, rangeID: job.rng.ID, rel: rel, token: job.token,
		byKey: map[string]int{}, keyed: len(rel.table.KeyIndexes) > 0, shape: shapeOf(rel), read: time.Now()}
	limit := sn.chunkRows
	if !p.keyed {
		limit = sn.chunkRows * unkeyedChunkFactor
	}
	sql, params, oids := chunkQuery(rel, job.rng, job.until, limit+1)
	rr := conn.PgConn().ExecParams(ctx, sql, params, oids, nil, []int16{pgtype.TextFormatCode})
	more := false
	var sl slab
	for rr.NextRow() {
		vals := rr.Values()
		if len(p.rows) == limit {
			more = true
			break
		}
		row, err := decodeTextRow(ln.tm, &sl, rel, vals)
		if err != nil {
			rr.Close()
			return nil, false, fmt.Errorf("copying %s: %w", qualified, err)
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
		return nil, false, fmt.Errorf("copying %s: %w", qualified, err)
	}
	p.complete = !more
	if more && !p.keyed {
		return nil, false, fault.Terminal("table %s has neither a primary key nor a replica identity index, and more than %d rows: cdcd copies such a table in one piece held in memory. Add a primary key (or ALTER TABLE ... REPLICA IDENTITY USING INDEX on a unique index), or leave the table out of the publication", qualified, limit)
	}
	if len(p.rows) == 0 {
		p.after = job.rng.After
	}
	return p, false, nil
}

// chunkQuery selects the rows of rel in key range rng after its last row copied and up to key until
// (when given), in key order, at most limit of them; a table without a key is selected whole.
func chunkQuery(rel *relation, rng keyRange, until []string, limit int) (sql string, params [][]byte, oids []uint32) {
	sql = selectFrom(rel)
	keys := rel.table.KeyIndexes
	if len(keys) == 0 {
		return sql + " LIMIT " + strconv.Itoa(limit), nil, nil
	}
	keyCols := make([]string, len(keys))
	for i, ki := range keys {
		keyCols[i] = pgx.Identifier{rel.table.Columns[ki].Name}.Sanitize()
	}
	param := func(text string, ki int) string {
		params = append(params, []byte(text))
		oids = append(oids, rel.oids[ki])
		return "$" + strconv.Itoa(len(params))
	}
	var where []string
	switch {
	case len(rng.After) == len(keys):
		marks := make([]string, len(keys))
		for i, ki := range keys {
			marks[i] = param(rng.After[i], ki)
		}
		where = append(where, "("+strings.Join(keyCols, ", ")+") > ("+strings.Join(marks, ", ")+")")
	case rng.From != nil:
		where = append(where, keyCols[0]+" >= "+param(*rng.From, keys[0]))
	}
	if rng.To != nil {
		where = append(where, keyCols[0]+" < "+param(*rng.To, keys[0]))
	}
	if len(until) == len(keys) {
		marks := make([]string, len(keys))
		for i, ki := range keys {
			marks[i] = param(until[i], ki)
		}
		where = append(where, "("+strings.Join(keyCols, ", ")+") <= ("+strings.Join(marks, ", ")+")")
	}
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
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

// relationChanged drops the pending chunks of a table when the stream brings a new shape of it: the
// rows read no longer match the changes that follow.
func (sn *snapshotter) relationChanged(rel *relation) {
	sn.dropPending(func(p *pendingChunk) bool {
		if rel.table.Schema == p.rel.table.Schema && rel.table.Name == p.rel.table.Name && shapeOf(rel) != p.shape {
			sn.r.log.Info("the table's shape changed while a chunk waited for its watermark; reading the chunk again", "table", p.table)
			return true
		}
		return false
	})
}

// observe applies a change the stream hands on to the pending chunks' copies of the row it touches,
// so that each chunk holds its rows as of its watermark.
func (sn *snapshotter) observe(c *change.Change) {
	for _, p := range sn.pending {
		if c.Table.Schema == p.rel.table.Schema && c.Table.Name == p.rel.table.Name {
			p.observe(c)
		}
	}
}

func (p *pendingChunk) observe(c *change.Change) {
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

// cut hands a pending chunk on as a transaction at the watermark's commit (pos, end), when token is
// its watermark; it reports whether it did.
func (sn *snapshotter) cut(ctx context.Context, h capture.Handler, token string, pos, end bookmark.LSN) (bool, error) {
	i := slices.IndexFunc(sn.pending, func(p *pendingChunk) bool { return p.token == token })
	if i < 0 {
		return false, nil // a watermark of a chunk given up, or of an earlier run
	}
	p := sn.pending[i]
	sn.pending = slices.Delete(sn.pending, i, i+1)
	tc := sn.state.table(p.table)
	ri := -1
	if tc != nil {
		ri = tc.rangeIndex(p.rangeID)
	}
	if p.dirty || ri < 0 {
		sn.r.log.Debug("a change under the chunk could not be applied to it, or its copy was cancelled; reading it again if still due", "table", p.table)
		return false, nil
	}
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
	if p.complete {
		tc.Ranges = slices.Delete(tc.Ranges, ri, ri+1)
	} else {
		tc.Ranges[ri].After = p.after
	}
	complete := len(tc.Ranges) == 0
	txn.Copy.Rows, txn.Copy.Complete = tc.Rows, complete
	sn.r.copies.Update(tc.qualified(), func(c *capture.TableCopy) {
		c.Rows, c.Chunks, c.Done = tc.Rows, tc.Chunks, complete
		c.RunRows += n
		c.Bytes += p.bytes
	})
	sn.r.log.Debug("snapshot chunk", "table", tc.qualified(), "range", p.rangeID, "chunk", tc.Chunks, "rows", n, "waited", time.Since(p.read).Round(time.Millisecond))
	if complete {
		sn.finishTable(tc.qualified())
	}
	sn.encoded = sn.state.encode()
	failpoint.Hit(ctx, "postgres.snapshot-chunk-commit")
	err := h.Commit(ctx, &change.Commit{Txn: txn, End: end.String(), Changes: n, State: sn.encoded})
	return true, err
}

// finishTable ends a table's copy.
func (sn *snapshotter) finishTable(qualified string) {
	i := slices.IndexFunc(sn.state.Tables, func(t tableCopy) bool { return t.qualified() == qualified })
	if i < 0 {
		return
	}
	tc := sn.state.Tables[i]
	attrs := []any{"table", qualified, "rows", tc.Rows, "chunks", tc.Chunks}
	if began, ok := sn.began[qualified]; ok {
		attrs = append(attrs, "took", time.Since(began).Round(time.Millisecond))
	}
	sn.r.log.Info("snapshot copied table", attrs...)
	sn.state.Tables = slices.Delete(sn.state.Tables, i, i+1)
	delete(sn.began, qualified)
	sn.dropPending(func(p *pendingChunk) bool { return p.table == qualified })
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
				add = append(add, newTableCopy(schema, table))
			}
		}
		sn.state.Tables = append(sn.state.Tables, add...)
		for _, t := range add {
			s.r.copies.Add(t.progress())
		}
		s.r.log.Info("snapshot requested", "tables", req.Tables, "queued", len(add), "tables_left", len(sn.state.Tables))
	case capture.SnapshotPause, capture.SnapshotResume:
		sn.state.Paused = req.Action == capture.SnapshotPause
		s.r.copies.SetPaused(sn.state.Paused)
		s.r.log.Info("snapshot "+map[bool]string{true: "paused", false: "resumed by request"}[sn.state.Paused], "tables_left", len(sn.state.Tables))
	case capture.SnapshotCancel:
		dropped := 0
		sn.state.Tables = slices.DeleteFunc(sn.state.Tables, func(t tableCopy) bool {
			drop := len(req.Tables) == 0 || slices.Contains(req.Tables, t.qualified())
			if drop {
				dropped++
				sn.dropPending(func(p *pendingChunk) bool { return p.table == t.qualified() })
			}
			return drop
		})
		s.r.copies.Cancel(req.Tables)
		s.r.log.Info("snapshot cancelled", "tables", dropped, "tables_left", len(sn.state.Tables))
	default:
		return fmt.Errorf("unknown snapshot action %v", req.Action)
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
	req, err := capture.ParseSignal(kind, data)
	if err != nil {
		s.r.log.Warn("a signal cdcd cannot act on; passed over", "signal_table", table.QualifiedName(), "id", field("id"), "type", kind, "err", err)
		return
	}
	if err := s.snapshotRequest(ctx, req); err != nil {
		s.r.log.Warn("a signal could not be acted on; passed over", "signal_table", table.QualifiedName(), "id", field("id"), "type", kind, "err", err)
	}
}
