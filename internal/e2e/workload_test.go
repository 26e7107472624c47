package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// expected is one change the source committed, with the row as PostgreSQL itself renders it
// (to_jsonb), an oracle independent of cdcd's decoding.
type expected struct {
	op        string
	key       string
	after     map[string]json.RawMessage
	unchanged []string
	// before is the old row as PostgreSQL rendered it just before an update or delete; a record's
	// before image must agree with it on every column it carries.
	before map[string]json.RawMessage
}

// recorder runs a workload on one connection, so commit order is program order, and records what
// each committed transaction changed.
type recorder struct {
	h       *harness
	conn    *pgx.Conn
	tx      pgx.Tx
	pending map[string][]expected
	events  map[string][]expected
	// xids are the committed transactions' ids as PostgreSQL gives them, in commit order.
	xids []string
}

func newRecorder(h *harness) *recorder {
	return &recorder{h: h, conn: h.conn, events: map[string][]expected{}}
}

// newOwnRecorder is a recorder on a connection of its own, so that the test may use the harness's
// connection while the workload runs.
func newOwnRecorder(h *harness) *recorder {
	h.t.Helper()
	r := &recorder{h: h, events: map[string][]expected{}}
	r.conn = h.connect()
	h.t.Cleanup(func() { r.conn.Close(context.Background()) })
	return r
}

// reconnect replaces the recorder's connection (after the server restarted).
func (r *recorder) reconnect() {
	r.h.t.Helper()
	r.conn.Close(context.Background())
	r.conn = r.h.connect()
}

// connect opens a session like the harness's own: UTC, ISO intervals, the test's schema; it waits
// up to a minute for a restarting server.
func (h *harness) connect() *pgx.Conn {
	h.t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(time.Minute)
	for {
		conn, err := pgx.Connect(ctx, h.dsn)
		if err == nil {
			for _, set := range []string{"SET TimeZone = 'UTC'", "SET IntervalStyle = 'iso_8601'", "SET search_path = " + h.schema} {
				if _, err = conn.Exec(ctx, set); err != nil {
					break
				}
			}
			if err == nil {
				return conn
			}
			conn.Close(ctx)
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("connecting to PostgreSQL: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// reconnect replaces the harness's connection (after the server restarted).
func (h *harness) reconnect() {
	h.t.Helper()
	h.conn.Close(context.Background())
	h.conn = h.connect()
}

func (r *recorder) begin() {
	r.h.t.Helper()
	tx, err := r.conn.Begin(context.Background())
	if err != nil {
		r.h.t.Fatal(err)
	}
	r.tx, r.pending = tx, map[string][]expected{}
}

func (r *recorder) commit() {
	r.h.t.Helper()
	var xid string
	// pgoutput names a transaction by its 32-bit xid.
	if err := r.tx.QueryRow(context.Background(), "SELECT (pg_current_xact_id()::text::numeric % 4294967296)::text").Scan(&xid); err != nil {
		r.h.t.Fatal(err)
	}
	if err := r.tx.Commit(context.Background()); err != nil {
		r.h.t.Fatal(err)
	}
	for t, evs := range r.pending {
		r.events[t] = append(r.events[t], evs...)
	}
	r.xids = append(r.xids, xid)
	r.tx, r.pending = nil, nil
}

func (r *recorder) rollback() {
	r.h.t.Helper()
	if err := r.tx.Rollback(context.Background()); err != nil {
		r.h.t.Fatal(err)
	}
	r.tx, r.pending = nil, nil
}

func (r *recorder) rows(sql string, args ...any) []map[string]json.RawMessage {
	r.h.t.Helper()
	var q interface {
		Query(context.Context, string, ...any) (pgx.Rows, error)
	} = r.conn
	if r.tx != nil {
		q = r.tx
	}
	rows, err := q.Query(context.Background(), sql, args...)
	if err != nil {
		r.h.t.Fatalf("%s: %v", sql, err)
	}
	raw, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		r.h.t.Fatalf("%s: %v", sql, err)
	}
	out := make([]map[string]json.RawMessage, len(raw))
	for i, s := range raw {
		if err := json.Unmarshal([]byte(s), &out[i]); err != nil {
			r.h.t.Fatalf("%s: %v", s, err)
		}
	}
	return out
}

func keyOf(row map[string]json.RawMessage) string { return `{"id":` + string(row["id"]) + `}` }

// insert runs INSERT ... RETURNING and records a "c" per row.
func (r *recorder) insert(table, cols string, args ...any) {
	r.h.t.Helper()
	ph := make([]string, len(args))
	for i := range args {
		ph[i] = fmt.Sprintf("$%d", i+1)
	}
	sql := fmt.Sprintf("INSERT INTO %s (%s) VALUES (%s) RETURNING to_jsonb(%s.*)::text", table, cols, strings.Join(ph, ", "), table)
	for _, row := range r.rows(sql, args...) {
		r.pending[table] = append(r.pending[table], expected{op: "c", key: keyOf(row), after: row})
	}
}

// update runs UPDATE ... WHERE id = id and records a "u", or a "d" of the old key and a "u" of
// the new one when the key changes. unchanged names the columns the source will not send.
func (r *recorder) update(table string, id int, set string, unchanged []string, args ...any) {
	r.h.t.Helper()
	old := r.oldRow(table, id)
	sql := fmt.Sprintf("UPDATE %s SET %s WHERE id = %d RETURNING to_jsonb(%s.*)::text", table, set, id, table)
	for _, row := range r.rows(sql, args...) {
		oldKey := fmt.Sprintf(`{"id":%d}`, id)
		if k := keyOf(row); k != oldKey {
			r.pending[table] = append(r.pending[table], expected{op: "d", key: oldKey, before: old})
		}
		r.pending[table] = append(r.pending[table], expected{op: "u", key: keyOf(row), after: row, unchanged: unchanged, before: old})
	}
}

func (r *recorder) delete(table string, id int) {
	r.h.t.Helper()
	old := r.oldRow(table, id)
	for _, row := range r.rows(fmt.Sprintf("DELETE FROM %s WHERE id = %d RETURNING json_build_object('id', id)::text", table, id)) {
		r.pending[table] = append(r.pending[table], expected{op: "d", key: keyOf(row), before: old})
	}
}

// oldRow is the row as PostgreSQL renders it before the change, in the change's transaction.
func (r *recorder) oldRow(table string, id int) map[string]json.RawMessage {
	r.h.t.Helper()
	rows := r.rows(fmt.Sprintf("SELECT to_jsonb(%s.*)::text FROM %s WHERE id = %d", table, table, id))
	if len(rows) != 1 {
		return nil
	}
	return rows[0]
}

func (r *recorder) truncate(tables ...string) {
	r.h.t.Helper()
	if _, err := r.tx.Exec(context.Background(), "TRUNCATE "+strings.Join(tables, ", ")); err != nil {
		r.h.t.Fatal(err)
	}
	for _, t := range tables {
		r.pending[t] = append(r.pending[t], expected{op: "t"})
	}
}

func (r *recorder) exec(sql string, args ...any) {
	r.h.t.Helper()
	if _, err := r.tx.Exec(context.Background(), sql, args...); err != nil {
		r.h.t.Fatalf("%s: %v", sql, err)
	}
}

// snapshot records the current rows of table as snapshot reads, in primary key order.
func (r *recorder) snapshot(table string) {
	r.h.t.Helper()
	for _, row := range r.rows(fmt.Sprintf("SELECT to_jsonb(%s.*)::text FROM %s ORDER BY id", table, table)) {
		r.events[table] = append(r.events[table], expected{op: "r", key: keyOf(row), after: row})
	}
}

// columnTypes reads udt_name of each column, for comparing renderings.
func (h *harness) columnTypes(table string) map[string]string {
	h.t.Helper()
	rows, err := h.conn.Query(context.Background(), `SELECT column_name, udt_name FROM information_schema.columns
		WHERE table_schema = $1 AND table_name = $2`, h.schema, table)
	if err != nil {
		h.t.Fatal(err)
	}
	types := map[string]string{}
	for rows.Next() {
		var c, t string
		if err := rows.Scan(&c, &t); err != nil {
			h.t.Fatal(err)
		}
		types[c] = t
	}
	return types
}

// verify compares, table by table, the records a read_committed consumer sees with what the source
// committed: same changes in the same order, each once, the same content, a tombstone after each
// delete, and nothing else.
func (h *harness) verify(events map[string][]expected, got map[string][]consumed) {
	h.t.Helper()
	for table := range got {
		if _, ok := events[table]; !ok {
			h.t.Errorf("records arrived for %s, which had no committed changes: %d records", table, len(got[table]))
		}
	}
	for table, exp := range events {
		types := h.columnTypes(table)
		var identity string
		if err := h.conn.QueryRow(context.Background(), "SELECT relreplident::text FROM pg_class WHERE oid = $1::regclass", h.schema+"."+table).Scan(&identity); err != nil {
			identity = "" // dropped since: before images are checked column by column only
		}
		recs := got[table]
		var data []consumed
		for i, c := range recs {
			if c.env != nil {
				data = append(data, c)
				continue
			}
			if i == 0 || recs[i-1].env == nil || recs[i-1].env.Op != "d" || recs[i-1].key != c.key {
				h.t.Errorf("%s: tombstone at offset %d (key %s) does not follow a delete of that key", table, c.offset, c.key)
			}
		}
		for i, c := range recs {
			if c.env != nil && c.env.Op == "d" && (i+1 >= len(recs) || recs[i+1].env != nil || recs[i+1].key != c.key) {
				h.t.Errorf("%s: delete at offset %d (key %s) is not followed by its tombstone", table, c.offset, c.key)
			}
		}
		n := min(len(exp), len(data))
		for i := range n {
			e, c := exp[i], data[i]
			where := fmt.Sprintf("%s change %d (offset %d, txn %s op %d)", table, i, c.offset, c.env.Source.TxID, c.env.Source.OpIndex)
			if c.env.Op != e.op {
				h.t.Errorf("%s: op %q, want %q (key %s, want key %s)", where, c.env.Op, e.op, c.key, e.key)
				continue
			}
			if e.op == "t" {
				if c.env.Before != nil || c.env.After != nil || c.env.Source.Table != table {
					h.t.Errorf("%s: a truncate of %s with before %v, after %v", where, c.env.Source.Table, c.env.Before, c.env.After)
				}
				continue
			}
			if c.key != e.key {
				h.t.Errorf("%s: key %s, want %s", where, c.key, e.key)
				continue
			}
			h.checkBefore(where, identity, types, e, c)
			if e.after == nil {
				if c.env.After != nil {
					h.t.Errorf("%s: after = %v, want none", where, c.env.After)
				}
				continue
			}
			if !slices.Equal(c.env.Unchanged, e.unchanged) {
				h.t.Errorf("%s: unchanged = %v, want %v", where, c.env.Unchanged, e.unchanged)
			}
			for col, want := range e.after {
				if slices.Contains(e.unchanged, col) {
					if _, sent := c.env.After[col]; sent {
						h.t.Errorf("%s: column %s was marked unchanged but has a value", where, col)
					}
					continue
				}
				gotv, ok := c.env.After[col]
				if !ok {
					h.t.Errorf("%s: column %s missing from after", where, col)
					continue
				}
				if err := sameValue(types[col], want, gotv); err != nil {
					h.t.Errorf("%s: column %s (%s): %v", where, col, types[col], err)
				}
			}
			for col := range c.env.After {
				if _, ok := e.after[col]; !ok {
					h.t.Errorf("%s: unexpected column %s in after", where, col)
				}
			}
			opHeader, _, _ := strings.Cut(c.headers["cdcd.op"], ".")
			if c.headers["cdcd.txn"] != c.env.Source.TxID || opHeader != strconv.FormatInt(c.env.Source.OpIndex, 10) || c.headers["cdcd.pos"] == "" {
				h.t.Errorf("%s: ordering headers %v disagree with the envelope", where, c.headers)
			}
		}
		if len(data) != len(exp) {
			h.t.Errorf("%s: %d changes arrived, %d were committed", table, len(data), len(exp))
			for i := n; i < len(data); i++ {
				h.t.Logf("  extra: %s %s txn %s op %d", data[i].env.Op, data[i].key, data[i].env.Source.TxID, data[i].env.Source.OpIndex)
			}
			for i := n; i < len(exp); i++ {
				h.t.Logf("  missing: %s %s", exp[i].op, exp[i].key)
			}
		}
	}
}

// checkBefore compares a record's before image with the old row PostgreSQL rendered: every column
// it carries holds the old value; a delete carries at least the key; under REPLICA IDENTITY FULL
// updates and deletes carry every column.
func (h *harness) checkBefore(where, identity string, types map[string]string, e expected, c consumed) {
	h.t.Helper()
	if e.before == nil {
		if c.env.Before != nil && e.op == "c" {
			h.t.Errorf("%s: an insert with a before image %v", where, c.env.Before)
		}
		return
	}
	if c.env.Before == nil {
		if e.op == "d" || identity == "f" {
			h.t.Errorf("%s: no before image; PostgreSQL logged the old row %v", where, e.before)
		}
		return
	}
	if _, ok := c.env.Before["id"]; !ok {
		h.t.Errorf("%s: the before image %v lacks the key", where, c.env.Before)
	}
	for col, got := range c.env.Before {
		want, ok := e.before[col]
		if !ok {
			h.t.Errorf("%s: before image column %s, which the old row does not have", where, col)
			continue
		}
		if err := sameValue(types[col], want, got); err != nil {
			h.t.Errorf("%s: before image column %s (%s): %v", where, col, types[col], err)
		}
	}
	if identity == "f" && len(c.env.Before) != len(e.before) {
		h.t.Errorf("%s: under REPLICA IDENTITY FULL the before image has %d of the %d columns", where, len(c.env.Before), len(e.before))
	}
}

// sameValue compares PostgreSQL's to_jsonb rendering of a value with cdcd's JSON KCOP's.
func sameValue(typ string, want, got json.RawMessage) error {
	ws, gs := string(want), string(got)
	if ws == "null" || gs == "null" {
		if ws != gs {
			return fmt.Errorf("got %s, want %s", gs, ws)
		}
		return nil
	}
	if strings.HasPrefix(typ, "_") {
		var wa, ga []json.RawMessage
		if err := json.Unmarshal(want, &wa); err != nil {
			return fmt.Errorf("want %s is not an array", ws)
		}
		if err := json.Unmarshal(got, &ga); err != nil {
			return fmt.Errorf("got %s is not an array", gs)
		}
		if len(wa) != len(ga) {
			return fmt.Errorf("got %s, want %s", gs, ws)
		}
		elem := typ[1:]
		if len(wa) > 0 && strings.HasPrefix(string(bytes.TrimSpace(wa[0])), "[") {
			elem = typ // a nested dimension
		}
		for i := range wa {
			if err := sameValue(elem, wa[i], ga[i]); err != nil {
				return fmt.Errorf("element %d: %w", i, err)
			}
		}
		return nil
	}
	unq := func(s string) string {
		var v string
		if json.Unmarshal([]byte(s), &v) == nil {
			return v
		}
		return s
	}
	switch typ {
	case "numeric":
		if unq(ws) != unq(gs) {
			return fmt.Errorf("got %s, want %s (exact text)", gs, ws)
		}
	case "float4", "float8":
		bits := 64
		if typ == "float4" {
			bits = 32
		}
		wf, err1 := strconv.ParseFloat(unq(ws), bits)
		gf, err2 := strconv.ParseFloat(unq(gs), bits)
		if err1 != nil || err2 != nil || !(wf == gf || math.IsNaN(wf) && math.IsNaN(gf)) {
			return fmt.Errorf("got %s, want %s", gs, ws)
		}
		if unq(gs) != strconv.FormatFloat(gf, 'g', -1, bits) && !math.IsNaN(gf) && !math.IsInf(gf, 0) {
			return fmt.Errorf("got %s, which is not the shortest rendering of a float%d", gs, bits)
		}
	case "bytea":
		wb, err1 := hex.DecodeString(strings.TrimPrefix(unq(ws), `\x`))
		gb, err2 := base64.StdEncoding.DecodeString(unq(gs))
		if err1 != nil || err2 != nil || !bytes.Equal(wb, gb) {
			return fmt.Errorf("got %s, want %s", gs, ws)
		}
	case "timestamptz":
		wt, err1 := time.Parse(time.RFC3339Nano, unq(ws))
		gt, err2 := time.Parse(time.RFC3339Nano, unq(gs))
		if err1 != nil || err2 != nil {
			if unq(ws) != unq(gs) {
				return fmt.Errorf("got %s, want %s", gs, ws)
			}
		} else if !wt.Equal(gt) || gt.Location() != time.UTC {
			return fmt.Errorf("got %s, want %s (as UTC)", gs, ws)
		}
	case "json", "jsonb":
		// The document travels as a string, so that the document null differs from SQL NULL.
		var doc string
		if err := json.Unmarshal(got, &doc); err != nil {
			return fmt.Errorf("got %s, want the document as a JSON string", gs)
		}
		return sameJSON(want, []byte(doc))
	default:
		return sameJSON(want, got)
	}
	return nil
}

// sameJSON compares two JSON texts as values, numbers by their exact text (never through float64,
// where 9223372036854775807 equals 9223372036854775806).
func sameJSON(want, got []byte) error {
	decode := func(b []byte) (any, error) {
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		var v any
		err := d.Decode(&v)
		return v, err
	}
	wv, err := decode(want)
	if err != nil {
		return err
	}
	gv, err := decode(got)
	if err != nil {
		return err
	}
	if !reflect.DeepEqual(wv, gv) {
		return fmt.Errorf("got %s, want %s", got, want)
	}
	return nil
}
