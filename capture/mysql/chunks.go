package mysql

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	gomysql "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/cdcd-dev/cdcd/capture"
	"github.com/cdcd-dev/cdcd/change"
	"github.com/cdcd-dev/cdcd/internal/failpoint"
	"github.com/cdcd-dev/cdcd/internal/fault"
)

// With source.mysql.signal_table set, snapshots are copied in chunks while the binlog streams, by
// DBLog's watermarks (Debezium's incremental snapshots): for each chunk cdcd writes a low watermark
// into the signal table, reads the chunk (the next rows in key order), and writes a high watermark.
// The stream notes every key of the chunk's table that a transaction between the two watermarks
// touches; at the high watermark's commit the chunk goes out as a transaction of its own, without
// those rows. A row the window touched may have been read before or after the change, but the
// stream carries the change itself, before the chunk; every other row of the chunk was the same at
// both watermarks, so it is the row as of the high watermark. No change is lost and none applied
// twice, and streaming never stops.

// Watermark types in the signal table's type column.
const (
	windowOpen  = "snapshot-window-open"
	windowClose = "snapshot-window-close"
)

// unkeyedChunkFactor bounds a table without a primary key, copied in one chunk held in memory: at
// most this many times the chunk size.
const unkeyedChunkFactor = 10

// copyState is a snapshot in progress: the tables still to copy, in order, and how far the first of
// them got. It travels as Commit.State and returns as Resume.State.
type copyState struct {
	Version int         `json:"v"`
	Tables  []tableCopy `json:"tables"`
	Paused  bool        `json:"paused,omitempty"`
}

// tableCopy is one table still to copy.
type tableCopy struct {
	Database string `json:"database"`
	Name     string `json:"name"`
	// After holds SQL literals of the key columns of the last row copied (as QUOTE() or HEX() made
	// them); empty before the first chunk.
	After  []string `json:"after,omitempty"`
	Chunks int64    `json:"chunks,omitempty"`
	Rows   int64    `json:"rows,omitempty"`
	// Until holds SQL literals of the key of the table's last row when its copy began: rows past it
	// were inserted since and reach the consumer through the stream, so the copy ends there even
	// while writers keep appending.
	Until []string `json:"until,omitempty"`
}

func (t *tableCopy) qualified() string { return t.Database + "." + t.Name }

// keyLiteral is what QUOTE() or HEX() (as X'...') give: the only SQL a state may bring into a query.
var keyLiteral = regexp.MustCompile(`^(X'[0-9A-F]*'|'([^'\\]|\\.|'')*')$`)

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
	for _, t := range st.Tables {
		for _, lit := range slices.Concat(t.After, t.Until) {
			if !keyLiteral.MatchString(lit) {
				return st, fmt.Errorf("the snapshot state in the commit stream holds %q as a key of %s, which is not a quoted SQL literal", lit, t.qualified())
			}
		}
	}
	return st, nil
}

func (st *copyState) encode() string {
	if len(st.Tables) == 0 {
		return ""
	}
	st.Version = 1
	b, _ := json.Marshal(st)
	return string(b)
}

// chunkJob is the next chunk to read, and the token its watermarks carry.
type chunkJob struct {
	table tableCopy
	token string
}

// chunkRead is a chunk as read between its watermarks.
type chunkRead struct {
	table    *change.Table
	rows     []change.Row
	after    []string
	until    []string // the copy's end, read with its first chunk
	complete bool
	gone     bool // the table no longer exists
	bytes    int64
}

// window is the stream between a chunk's low and high watermarks.
type window struct {
	token   string
	table   string // database.table
	touched map[string]bool
	dirty   bool // a change the window cannot match to keys: read the chunk again
	closing bool // the high watermark is in the transaction being read
}

// chunker runs a snapshot beside the stream: the stream's goroutine places chunks, a goroutine of
// its own reads them. mu guards everything but the reader's connection.
type chunker struct {
	r           *Reader
	watermarkID string
	signal      [2]string // database, table

	mu      sync.Mutex
	state   copyState
	encoded string
	out     *chunkJob // the job handed to the reader and not yet placed
	win     *window
	reads   map[string]*chunkRead // by token
	nonce   uint64
	began   time.Time
	jobs    chan chunkJob
}

func newChunker(r *Reader, st copyState) *chunker {
	db, name, _ := strings.Cut(r.cfg.SignalTable, ".")
	c := &chunker{r: r, watermarkID: fmt.Sprintf("cdcd-watermark-%d", r.cfg.ServerID), signal: [2]string{db, name},
		state: st, reads: map[string]*chunkRead{}, nonce: uint64(time.Now().UnixNano()), began: time.Now(), jobs: make(chan chunkJob, 1)}
	c.encoded = st.encode()
	progress := make([]capture.TableCopy, len(st.Tables))
	for i, t := range st.Tables {
		progress[i] = capture.TableCopy{Table: t.qualified(), Rows: t.Rows, Chunks: t.Chunks, Estimate: -1}
	}
	r.copies.Reset(progress, st.Paused)
	return c
}

// stateNow is the state every position handed on carries.
func (c *chunker) stateNow() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.encoded
}

// kick hands the reader the next chunk to read, unless one is out, nothing is left or the copy is
// paused. c.mu is held.
func (c *chunker) kick() {
	if c.out != nil || c.state.Paused || len(c.state.Tables) == 0 {
		return
	}
	c.nonce++
	t := c.state.Tables[0]
	t.After = slices.Clone(t.After)
	job := chunkJob{table: t, token: fmt.Sprintf("%s/%d/%d", t.qualified(), t.Chunks+1, c.nonce)}
	c.out = &job
	c.jobs <- job // never blocks: one job out at a time, and the reader takes each
}

// run reads the chunks the stream asks for, each between its watermarks, until ctx ends; an error
// ends the stream through fail.
func (c *chunker) run(ctx context.Context, fail func(error)) {
	var conn *client.Conn
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for {
		var job chunkJob
		select {
		case <-ctx.Done():
			return
		case job = <-c.jobs:
		}
		if conn == nil {
			var err error
			if conn, err = c.open(ctx); err != nil {
				fail(err)
				return
			}
		}
		if err := c.readBetweenWatermarks(ctx, conn, job); err != nil {
			fail(err)
			return
		}
	}
}

func (c *chunker) open(ctx context.Context) (*client.Conn, error) {
	conn, err := connect(ctx, c.r.cfg)
	if err != nil {
		return nil, err
	}
	for _, q := range []string{"SET SESSION time_zone = '+00:00'", "SET NAMES utf8mb4",
		"SET SESSION sql_mode = REPLACE(@@SESSION.sql_mode, 'NO_BACKSLASH_ESCAPES', '')", "SET autocommit = 1"} {
		if _, err := conn.Execute(q); err != nil {
			conn.Close()
			return nil, fmt.Errorf("snapshot: %s: %w", q, err)
		}
	}
	return conn, nil
}

// readBetweenWatermarks writes job's low watermark, reads its chunk, leaves the chunk for the
// stream and writes the high watermark.
func (c *chunker) readBetweenWatermarks(ctx context.Context, conn *client.Conn, job chunkJob) error {
	if err := c.watermark(conn, windowOpen, job.token); err != nil {
		return err
	}
	read, err := c.r.readChunk(ctx, conn, job.table)
	if err != nil {
		return err
	}
	if job.table.Chunks == 0 && !read.gone {
		// The statistics' row count, for the progress: InnoDB's is an estimate.
		if res, err := conn.Execute("SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?", job.table.Database, job.table.Name); err == nil && res.RowNumber() == 1 {
			if n, err := res.GetInt(0, 0); err == nil {
				c.r.copies.Update(job.table.qualified(), func(p *capture.TableCopy) { p.Estimate = n })
			}
		}
	}
	failpoint.Hit(ctx, "mysql.snapshot-chunk-read")
	c.mu.Lock()
	c.reads[job.token] = read
	c.mu.Unlock()
	return c.watermark(conn, windowClose, job.token)
}

// watermark writes cdcd's row of the signal table: one row per cdcd, overwritten each time.
func (c *chunker) watermark(conn *client.Conn, kind, token string) error {
	q := fmt.Sprintf("INSERT INTO %s.%s (id, type, data) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE type = VALUES(type), data = VALUES(data)",
		quoteIdent(c.signal[0]), quoteIdent(c.signal[1]))
	if _, err := conn.Execute(q, c.watermarkID, kind, token); err != nil {
		var myErr *gomysql.MyError
		if errors.As(err, &myErr) && (myErr.Code == gomysql.ER_TABLEACCESS_DENIED_ERROR || myErr.Code == gomysql.ER_NO_SUCH_TABLE || myErr.Code == gomysql.ER_BAD_FIELD_ERROR) {
			return fault.Terminal("writing the snapshot watermark into source.mysql.signal_table %s: %v; create it as CREATE TABLE %s (id VARCHAR(64) PRIMARY KEY, type VARCHAR(32) NOT NULL, data TEXT) and GRANT INSERT, UPDATE ON it to %s",
				c.r.cfg.SignalTable, err, c.r.cfg.SignalTable, c.r.cfg.User)
		}
		return fmt.Errorf("writing the snapshot watermark: %w", err)
	}
	return nil
}

// readChunk reads the rows of t after t.After in key order: a chunk, or a table without a key
// whole.
func (r *Reader) readChunk(ctx context.Context, conn *client.Conn, tc tableCopy) (*chunkRead, error) {
	t, cols, err := r.describeForCopy(conn, tc.Database, tc.Name)
	if errors.Is(err, errNoTable) {
		return &chunkRead{gone: true, complete: true}, nil
	}
	if err != nil {
		return nil, err
	}
	keyed := len(t.KeyIndexes) > 0
	limit := r.cfg.SnapshotChunkRows
	if !keyed {
		limit *= unkeyedChunkFactor
	}
	exprs := make([]string, 0, len(cols)+len(t.KeyIndexes))
	for _, c := range cols {
		exprs = append(exprs, c.expr)
	}
	keyCols := make([]string, len(t.KeyIndexes))
	for i, ki := range t.KeyIndexes {
		keyCols[i] = quoteIdent(cols[ki].name)
		if binaryType(cols[ki].dataType) {
			exprs = append(exprs, "CONCAT('X''', HEX("+keyCols[i]+"), '''')")
		} else {
			exprs = append(exprs, "QUOTE("+keyCols[i]+")")
		}
	}
	from := " FROM " + quoteIdent(tc.Database) + "." + quoteIdent(tc.Name)
	read := &chunkRead{table: t, after: tc.After, until: tc.Until}
	if keyed && read.until == nil && tc.Chunks == 0 && len(tc.After) == 0 {
		desc := make([]string, len(keyCols))
		for i, k := range keyCols {
			desc[i] = k + " DESC"
		}
		res, err := conn.Execute("SELECT " + strings.Join(exprs[len(cols):], ", ") + from + " ORDER BY " + strings.Join(desc, ", ") + " LIMIT 1")
		if err != nil {
			return nil, fmt.Errorf("reading the last key of %s: %w", tc.qualified(), err)
		}
		if res.RowNumber() == 1 {
			for i := range keyCols {
				lit, _ := res.GetString(0, i)
				read.until = append(read.until, strings.Clone(lit))
			}
		}
	}
	q := "SELECT " + strings.Join(exprs, ", ") + from
	if keyed {
		var where []string
		if len(tc.After) == len(keyCols) {
			where = append(where, "("+strings.Join(keyCols, ", ")+") > ("+strings.Join(tc.After, ", ")+")")
		}
		if len(read.until) == len(keyCols) {
			where = append(where, "("+strings.Join(keyCols, ", ")+") <= ("+strings.Join(read.until, ", ")+")")
		}
		if len(where) > 0 {
			q += " WHERE " + strings.Join(where, " AND ")
		}
		q += " ORDER BY " + strings.Join(keyCols, ", ")
	}
	q += fmt.Sprintf(" LIMIT %d", limit+1)
	more := false
	var result gomysql.Result
	err = conn.ExecuteSelectStreaming(q, &result, func(values []gomysql.FieldValue) error {
		if len(read.rows) == limit {
			more = true
			return nil
		}
		row := make(change.Row, len(cols))
		for i := range cols {
			v, err := cols[i].value(&values[i])
			if err != nil {
				return fmt.Errorf("column %s (%s): %w", cols[i].name, cols[i].dataType, err)
			}
			row[i] = v
			read.bytes += int64(len(values[i].AsString()))
		}
		if keyed {
			read.after = make([]string, len(keyCols))
			for i := range keyCols {
				read.after[i] = string(values[len(cols)+i].AsString())
			}
		}
		read.rows = append(read.rows, row)
		return nil
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("copying %s: %w", tc.qualified(), err)
	}
	read.complete = !more
	if more && !keyed {
		return nil, fault.Terminal("table %s has no primary key and more than %d rows: cdcd copies such a table in one piece held in memory. Add a primary key, or leave the table out of source.mysql.tables",
			tc.qualified(), limit)
	}
	return read, nil
}

func binaryType(dataType string) bool {
	switch dataType {
	case "binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob":
		return true
	}
	return false
}

// keyOf renders the key columns of row for matching a chunk's rows with the stream's; ok is false
// when a key value is missing.
func keyOf(t *change.Table, row change.Row) (string, bool) {
	if slices.ContainsFunc(t.KeyIndexes, func(i int) bool { return i >= len(row) }) {
		return "", false
	}
	var b strings.Builder
	// In column order: the binlog's and the catalog's key orders need not agree.
	for i := range row {
		if !slices.Contains(t.KeyIndexes, i) {
			continue
		}
		if row[i].Kind != change.Present {
			return "", false
		}
		fmt.Fprintf(&b, "%v\x00", row[i].V)
	}
	return b.String(), true
}

// signalRow acts on a row of the signal table the stream brings: a watermark of cdcd's (opening or
// closing the window of the chunk out), or a user's signal.
func (c *chunker) signalRow(ctx context.Context, id, kind, data string) {
	c.mu.Lock()
	if id == c.watermarkID {
		defer c.mu.Unlock()
		if c.out == nil || data != c.out.token {
			return // a watermark of a chunk given up, or of an earlier run
		}
		switch kind {
		case windowOpen:
			c.win = &window{token: data, table: c.out.table.qualified(), touched: map[string]bool{}}
		case windowClose:
			if c.win != nil && c.win.token == data {
				c.win.closing = true
			}
		}
		return
	}
	c.mu.Unlock()
	req, err := capture.ParseSignal(kind, data)
	if err != nil {
		c.r.log.Warn("a signal cdcd cannot act on; passed over", "signal_table", c.r.cfg.SignalTable, "id", id, "type", kind, "err", err)
		return
	}
	if err := c.request(ctx, req); err != nil {
		c.r.log.Warn("a signal could not be acted on; passed over", "signal_table", c.r.cfg.SignalTable, "id", id, "type", kind, "err", err)
	}
}

// observe notes the keys a change touches inside an open window on the chunk's table.
func (c *chunker) observe(ch *change.Change) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.win
	if w == nil || w.closing || ch.Table.QualifiedName() != w.table {
		return
	}
	if len(ch.Table.KeyIndexes) == 0 {
		w.dirty = true
		return
	}
	for _, row := range []change.Row{ch.Before, ch.After} {
		if row == nil {
			continue
		}
		if k, ok := keyOf(ch.Table, row); ok {
			w.touched[k] = true
		} else {
			w.dirty = true
		}
	}
}

// schemaChanged marks an open window dirty: a statement that may change a table's shape.
func (c *chunker) schemaChanged() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.win != nil {
		c.win.dirty = true
	}
}

// closing reports whether the transaction being read holds the high watermark of the open window.
func (c *chunker) closing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.win != nil && c.win.closing
}

// place hands the chunk whose high watermark commits at (pos, end) on as a transaction of its own,
// without the rows its window touched, and asks for the next chunk; placed is false when no chunk
// goes out (it was cancelled, its table dropped, or it is read again).
func (c *chunker) place(ctx context.Context, h capture.Handler, pos, end string) (placed bool, err error) {
	c.mu.Lock()
	w := c.win
	read := c.reads[w.token]
	delete(c.reads, w.token)
	c.win, c.out = nil, nil
	if read == nil {
		c.mu.Unlock()
		return false, fmt.Errorf("the high watermark %s arrived before its chunk was read", w.token)
	}
	if len(c.state.Tables) == 0 || c.state.Tables[0].qualified() != w.table {
		c.kick()
		c.mu.Unlock()
		return false, nil // cancelled meanwhile
	}
	tc := &c.state.Tables[0]
	if read.gone {
		c.r.log.Warn("a table to copy no longer exists; its snapshot ends here", "table", tc.qualified(), "rows", tc.Rows)
		c.r.copies.Update(tc.qualified(), func(p *capture.TableCopy) { p.Done = true })
		c.finishTable()
		c.kick()
		c.mu.Unlock()
		return false, nil
	}
	if w.dirty {
		c.r.log.Debug("a change under the chunk could not be matched to its rows; reading it again", "table", tc.qualified())
		c.kick()
		c.mu.Unlock()
		return false, nil
	}
	var rows []change.Row
	for _, row := range read.rows {
		if k, ok := keyOf(read.table, row); ok && w.touched[k] {
			continue // the stream carried the row's change, before this point
		}
		rows = append(rows, row)
	}
	txn := &change.Txn{ID: "snapshot", Position: pos, Snapshot: true, Copy: &change.Copy{Table: tc.qualified(), Chunk: tc.Chunks + 1}}
	tc.Chunks++
	tc.Rows += int64(len(rows))
	tc.After, tc.Until = read.after, read.until
	txn.Copy.Rows, txn.Copy.Complete = tc.Rows, read.complete
	c.r.copies.Update(tc.qualified(), func(p *capture.TableCopy) {
		p.Rows, p.Chunks, p.Done = tc.Rows, tc.Chunks, read.complete
		p.RunRows += int64(len(rows))
		p.Bytes += read.bytes
		if p.Started.IsZero() {
			p.Started = time.Now()
		}
	})
	if read.complete {
		c.finishTable()
	}
	c.encoded = c.state.encode()
	state := c.encoded
	c.kick()
	c.mu.Unlock()

	if err := h.Begin(ctx, txn); err != nil {
		return true, err
	}
	for i, row := range rows {
		failpoint.Hit(ctx, "mysql.snapshot-row")
		if err := h.Change(ctx, &change.Change{Op: change.Read, Table: read.table, After: row, Txn: txn, Index: int64(i)}); err != nil {
			return true, err
		}
	}
	failpoint.Hit(ctx, "mysql.snapshot-chunk-commit")
	return true, h.Commit(ctx, &change.Commit{Txn: txn, End: end, Changes: int64(len(rows)), State: state})
}

// finishTable ends the first table's copy. c.mu is held.
func (c *chunker) finishTable() {
	tc := c.state.Tables[0]
	c.r.log.Info("snapshot copied table", "table", tc.qualified(), "rows", tc.Rows, "chunks", tc.Chunks, "took", time.Since(c.began).Round(time.Millisecond))
	c.state.Tables = c.state.Tables[1:]
	c.began = time.Now()
	c.encoded = c.state.encode()
	if len(c.state.Tables) == 0 {
		c.r.log.Info("snapshot complete")
	}
}

// request applies a snapshot request to the state; the next position handed on carries it.
func (c *chunker) request(ctx context.Context, req capture.SnapshotRequest) error {
	switch req.Action {
	case capture.SnapshotStart:
		if len(req.Tables) == 0 {
			return errors.New("name the tables to copy, as database.table")
		}
		for _, name := range req.Tables {
			db, table, ok := strings.Cut(name, ".")
			if !ok || db == "" || table == "" {
				return fmt.Errorf("%q is not database.table", name)
			}
			if name == c.r.cfg.SignalTable {
				return fmt.Errorf("%s is the signal table; it is not copied", name)
			}
			if len(c.r.tables) > 0 && !c.r.tables[name] {
				return fmt.Errorf("%s is not in source.mysql.tables, so its changes are not captured and a copy could not be kept current: add it there, or correct the name", name)
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch req.Action {
	case capture.SnapshotStart:
		var add []tableCopy
		for _, name := range req.Tables {
			db, table, _ := strings.Cut(name, ".")
			has := func(t tableCopy) bool { return t.Database == db && t.Name == table }
			if !slices.ContainsFunc(c.state.Tables, has) && !slices.ContainsFunc(add, has) {
				add = append(add, tableCopy{Database: db, Name: table})
			}
		}
		c.state.Tables = append(c.state.Tables, add...)
		for _, t := range add {
			c.r.copies.Add(capture.TableCopy{Table: t.qualified(), Estimate: -1})
		}
		c.r.log.Info("snapshot requested", "tables", req.Tables, "queued", len(add), "tables_left", len(c.state.Tables))
	case capture.SnapshotPause, capture.SnapshotResume:
		c.state.Paused = req.Action == capture.SnapshotPause
		c.r.copies.SetPaused(c.state.Paused)
		c.r.log.Info("snapshot "+map[bool]string{true: "paused", false: "resumed by request"}[c.state.Paused], "tables_left", len(c.state.Tables))
	case capture.SnapshotCancel:
		if len(c.state.Tables) == 0 {
			return errors.New("no snapshot runs, so there is nothing to cancel")
		}
		dropped := 0
		c.state.Tables = slices.DeleteFunc(c.state.Tables, func(t tableCopy) bool {
			drop := len(req.Tables) == 0 || slices.Contains(req.Tables, t.qualified())
			if drop {
				dropped++
			}
			return drop
		})
		c.r.copies.Cancel(req.Tables)
		c.r.log.Info("snapshot cancelled", "tables", dropped, "tables_left", len(c.state.Tables))
	default:
		return fmt.Errorf("unknown snapshot action %v", req.Action)
	}
	c.encoded = c.state.encode()
	c.kick()
	return nil
}

// RequestSnapshot implements capture.SnapshotRequester.
func (r *Reader) RequestSnapshot(ctx context.Context, req capture.SnapshotRequest) error {
	if r.cfg.SignalTable == "" {
		return errors.New("snapshots on demand need source.mysql.signal_table: cdcd writes the watermarks that place each chunk in the binlog there")
	}
	c := r.chunks.Load()
	if c == nil {
		return errors.New("the MySQL reader is not streaming now, so it cannot take the request; try again")
	}
	return c.request(ctx, req)
}

// Copying implements capture.Copier.
func (r *Reader) Copying() []capture.TableCopy { return r.copies.Copying() }
