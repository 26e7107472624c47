package kcop

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cdcd-dev/cdcd/change"
)

var update = flag.Bool("update", false, "rewrite the golden files")

var orders = &change.Table{
	Database: "shop", Schema: "public", Name: "orders",
	Columns: []change.Column{
		{Name: "id", Type: "int8", Key: true}, {Name: "amount", Type: "numeric"}, {Name: "note", Type: "text"},
		{Name: "doc", Type: "jsonb"}, {Name: "tags", Type: "_text"}, {Name: "paid", Type: "timestamptz"},
		{Name: "wait", Type: "interval"}, {Name: "raw", Type: "bytea"}, {Name: "ratio", Type: "float4"},
		{Name: "score", Type: "float8"}, {Name: "day", Type: "date"}, {Name: "ok", Type: "bool"},
	},
	KeyIndexes: []int{0},
}

func present(v any) change.Value { return change.Value{V: v} }

var (
	null      = change.Value{Kind: change.Null}
	unchanged = change.Value{Kind: change.Unchanged}
	absent    = change.Value{Kind: change.Absent}
	txn       = &change.Txn{ID: "731", Position: "0/16B3748", CommitTime: time.Date(2026, 11, 22, 6, 0, 0, 123e6, time.UTC)}
)

func fullRow(id int64, note change.Value) change.Row {
	return change.Row{
		present(id), present(change.Decimal("12.5000")), note,
		present(change.JSON(`{"a": [1, 2.50, "x"]}`)), present([]any{"red", nil, "quo\"te"}),
		present(time.Date(2026, 1, 2, 3, 4, 5, 678900000, time.FixedZone("x", 3600))),
		present(change.Interval{Months: 14, Days: 3, Microseconds: 4*3_600_000_000 + 5*60_000_000 + 6_500_000}),
		present([]byte{0, 1, 0xFE, 0xFF}), present(float32(0.1)), present(math.Inf(-1)),
		present(change.Date("2026-02-28")), present(true),
	}
}

func keyOnly(id int64) change.Row {
	r := change.Row{present(id)}
	for range len(orders.Columns) - 1 {
		r = append(r, absent)
	}
	return r
}

// goldenCase is one change every formatter's golden files cover.
type goldenCase struct {
	name string
	opts map[string]any
	c    change.Change
}

// goldenCases are the changes of the golden files: insert, NULLs, snapshot, update with an
// unchanged TOAST value, with the full before image, with a key change, delete, truncate, over a
// table of every kind of value.
func goldenCases() []goldenCase {
	return []goldenCase{
		{"insert", nil, change.Change{Op: change.Insert, After: fullRow(1, present("line1\nline2\ttab \u2028 é"))}},
		{"insert_nulls", nil, change.Change{Op: change.Insert, After: change.Row{present(int64(2)), null, null, null, null, null, null, null, null, null, null, null}}},
		// The JSON document null next to SQL NULL: "doc":"null" against "doc":null above.
		{"insert_json_null_document", nil, change.Change{Op: change.Insert, After: change.Row{present(int64(2)), null, null, present(change.JSON("null")), null, null, null, null, null, null, null, null}}},
		{"snapshot_read", nil, change.Change{Op: change.Read, After: fullRow(3, present("snap")), Txn: &change.Txn{ID: "snapshot", Position: "0/1000", Snapshot: true}}},
		{"update_unchanged_toast", nil, change.Change{Op: change.Update, After: fullRow(1, unchanged)}},
		{"update_full_before", nil, change.Change{Op: change.Update, Before: fullRow(1, present("old")), After: fullRow(1, present("new"))}},
		{"update_key_change", nil, change.Change{Op: change.Update, KeyChanged: true, Before: keyOnly(1), After: fullRow(9, present("moved"))}},
		{"delete_key_only", nil, change.Change{Op: change.Delete, Before: keyOnly(1)}},
		{"truncate", nil, change.Change{Op: change.Truncate}},
	}
}

// checkGolden compares out with the golden file testdata/<name>.golden (rewritten under -update).
func checkGolden(t *testing.T, name string, out []byte) {
	t.Helper()
	golden := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(golden, out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./kcop -update to create it)", err)
	}
	if !bytes.Equal(out, want) {
		t.Errorf("output differs from %s:\n%s\nwant:\n%s", golden, out, want)
	}
}

// runGolden runs k on every golden case and compares what render makes of the records (or of the
// error) with testdata/<prefix>_<case>.golden.
func runGolden(t *testing.T, prefix string, extra []goldenCase, newKCOP func(opts map[string]any) (KCOP, error), render func(t *testing.T, recs []Record) []byte) {
	for _, tc := range append(goldenCases(), extra...) {
		t.Run(tc.name, func(t *testing.T) {
			k, err := newKCOP(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			c := tc.c
			c.Table = orders
			if c.Txn == nil {
				c.Txn = txn
			}
			c.Index = 4
			recs, err := k.Process(context.Background(), &c, nil)
			var out []byte
			if err != nil {
				out = []byte("error: " + err.Error() + "\n")
			} else {
				out = render(t, recs)
			}
			checkGolden(t, prefix+"_"+tc.name, out)
		})
	}
}

// renderText writes each record's topic, partition, key and value as text.
func renderText(t *testing.T, recs []Record) []byte {
	var out bytes.Buffer
	for _, r := range recs {
		fmt.Fprintf(&out, "topic=%s partition=%d\nkey=%s\nvalue=%s\n", r.Topic, r.Partition, r.Key, r.Value)
		for _, h := range r.Headers {
			fmt.Fprintf(&out, "header %s=%s\n", h.Key, h.Value)
		}
		out.WriteByte('\n')
	}
	return out.Bytes()
}

func TestJSONGolden(t *testing.T) {
	extra := []goldenCase{{"delete_no_tombstone", map[string]any{"tombstones": false, "topic": "{database}-{table}"}, change.Change{Op: change.Delete, Before: keyOnly(1)}}}
	runGolden(t, "json", extra, func(opts map[string]any) (KCOP, error) {
		k, err := NewJSON(NewOptions(opts))
		if err == nil {
			k.(*JSON).now = func() time.Time { return time.Date(2026, 11, 22, 7, 0, 0, 0, time.UTC) }
		}
		return k, err
	}, func(t *testing.T, recs []Record) []byte {
		for _, r := range recs {
			for _, js := range [][]byte{r.Key, r.Value} {
				if js != nil && !json.Valid(js) {
					t.Errorf("not valid JSON: %s", js)
				}
			}
		}
		return renderText(t, recs)
	})
}

func TestJSONOptions(t *testing.T) {
	for _, tc := range []struct {
		opts map[string]any
		want string
	}{
		{map[string]any{"topik": "x"}, "unknown option(s) topik"},
		{map[string]any{"topic": "cdcd.{tabel}"}, "{tabel}"},
		{map[string]any{"topic": "cdcd.{table"}, "unclosed"},
		{map[string]any{"topic": ""}, "is empty"},
		{map[string]any{"tombstones": "maybe"}, "tombstones"},
		{map[string]any{"topic": []string{"a"}}, "topic"},
	} {
		_, err := New("json", NewOptions(tc.opts))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(json, %v) = %v, want an error mentioning %q", tc.opts, err, tc.want)
		}
	}
	if _, err := New("jsn", NewOptions(nil)); err == nil || !strings.Contains(err.Error(), "known: ") {
		t.Errorf("unknown KCOP: %v", err)
	}
}

func TestTopicSanitised(t *testing.T) {
	tp, err := parseTopicTemplate("cdcd.{schema}.{table}")
	if err != nil {
		t.Fatal(err)
	}
	got := tp.expand(&change.Table{Schema: "My Schema", Name: "ordres/été"})
	if got != "cdcd.My_Schema.ordres__t_" {
		t.Errorf("topic = %q", got)
	}
}

// TestTopicOfEachTableShape: topics are remembered per table shape; a table with another name (a new
// shape, as after a rename), an overridden table and a constant template each get their own.
func TestTopicOfEachTableShape(t *testing.T) {
	tp, err := topicOptions{Topic: "cdcd.{schema}.{table}", Topics: map[string]string{"s.special": "special.{table}"}}.route()
	if err != nil {
		t.Fatal(err)
	}
	orders, special := &change.Table{Schema: "s", Name: "orders"}, &change.Table{Schema: "s", Name: "special"}
	renamed := &change.Table{Schema: "s", Name: "orders_v2"}
	for range 3 {
		for _, tc := range []struct {
			tbl  *change.Table
			want string
		}{{orders, "cdcd.s.orders"}, {special, "special.special"}, {renamed, "cdcd.s.orders_v2"}} {
			if got := tp.expand(tc.tbl); got != tc.want {
				t.Errorf("topic of %s = %q, want %q", tc.tbl.QualifiedName(), got, tc.want)
			}
		}
	}
	fixed, err := topicOptions{Topic: "all.rows"}.route()
	if err != nil {
		t.Fatal(err)
	}
	if got := fixed.expand(orders); got != "all.rows" {
		t.Errorf("constant topic = %q", got)
	}
}

// checkAppendString fails unless appendString(s) is valid JSON that reads back as encoding/json's
// rendering of s does.
func checkAppendString(t *testing.T, s string) {
	t.Helper()
	var got, want string
	if err := json.Unmarshal(appendString(nil, s), &got); err != nil {
		t.Fatalf("%q -> invalid JSON: %v", s, err)
	}
	std, _ := json.Marshal(s)
	_ = json.Unmarshal(std, &want)
	if got != want {
		t.Fatalf("%q: got %q, want %q", s, got, want)
	}
}

func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{"", "plain", "q\"b\\s", "\x00\x1f\x7f", "é日本", "bad\xffutf8", "\u2028\u2029", "<&>"} {
		checkAppendString(t, s)
	}
	// Every byte value at every position of the words appendString reads eight bytes at a time.
	for c := range 256 {
		for at := range 17 {
			s := []byte("abcdefghijklmnopq")
			s[at] = byte(c)
			checkAppendString(t, string(s))
			checkAppendString(t, string(s[:at+1]))
		}
	}
}

func FuzzAppendString(f *testing.F) {
	f.Add("a\"b\\c\n\xff")
	f.Fuzz(checkAppendString)
}

func BenchmarkJSONInsert(b *testing.B) {
	k, err := NewJSON(NewOptions(nil))
	if err != nil {
		b.Fatal(err)
	}
	c := &change.Change{Op: change.Insert, Table: orders, After: fullRow(1, present("a note of some length")), Txn: txn}
	var dst []Record
	b.ReportAllocs()
	for b.Loop() {
		dst, err = k.Process(context.Background(), c, dst[:0])
		if err != nil {
			b.Fatal(err)
		}
	}
}

// TestJSONRefusesValuesItCannotRender: a value of a Go type outside change.Value's list is an error
// naming the column, never some string, wherever it is (a key column, the before image, an array),
// and the records of earlier changes in dst stay as they were.
func TestJSONRefusesValuesItCannotRender(t *testing.T) {
	k, err := NewJSON(NewOptions(map[string]any{"tombstones": true}))
	if err != nil {
		t.Fatal(err)
	}
	tbl := &change.Table{Schema: "s", Name: "t", Columns: []change.Column{{Name: "id", Key: true}, {Name: "odd"}}, KeyIndexes: []int{0}}
	earlier := []Record{{Topic: "earlier", Value: []byte("kept")}}
	for _, v := range []any{int(7), struct{ A int }{1}, []any{int64(1), uint8(2)}, map[string]any{}} {
		plain, odd := change.Row{{V: int64(1)}, {V: "fine"}}, change.Row{{V: int64(1)}, {V: v}}
		oddKey := change.Row{{V: v}, {V: "fine"}}
		for name, c := range map[string]*change.Change{
			"insert":                 {Op: change.Insert, After: odd},
			"insert, key column":     {Op: change.Insert, After: oddKey},
			"delete":                 {Op: change.Delete, Before: odd},
			"delete, key column":     {Op: change.Delete, Before: oddKey},
			"update, before":         {Op: change.Update, Before: odd, After: plain},
			"update, after":          {Op: change.Update, Before: plain, After: odd},
			"update, old key column": {Op: change.Update, Before: oddKey, After: plain, KeyChanged: true},
			"update, new key column": {Op: change.Update, Before: plain, After: oddKey, KeyChanged: true},
		} {
			c.Table, c.Txn = tbl, &change.Txn{ID: "1"}
			want := "column odd of s.t"
			if strings.Contains(name, "key column") {
				want = "column id of s.t"
			}
			recs, err := k.Process(context.Background(), c, slices.Clone(earlier))
			if err == nil || !strings.Contains(err.Error(), want) || len(recs) != 1 || recs[0].Topic != "earlier" {
				t.Errorf("%T, %s: records %v, err %v; want the earlier record alone and an error naming the column", v, name, recs, err)
			}
		}
	}
}

// TestRenderableIsWhatAppendAnyRenders: the two lists of the Go types the JSON rendering knows, the
// check's and the renderer's, agree on every type a change.Value may hold and on others.
func TestRenderableIsWhatAppendAnyRenders(t *testing.T) {
	for _, v := range []any{nil, int64(-1), uint64(1), 1.5, float32(0.5), true, "s", []byte("b"), change.Decimal("1.0"),
		change.JSON(`{}`), change.Date("2020-01-01"), change.Time("10:00:00"), change.TimeTZ("10:00:00+02"),
		change.Timestamp("2020-01-01T10:00:00"), time.Unix(0, 0), change.Interval{Days: 1}, change.Text("t"),
		[]any{int64(1), "a", nil}, []any{[]any{true}}, int(1), int32(1), uint8(1), struct{}{}, map[string]any{},
		[]any{int64(1), int(2)}, []string{"a"}, &struct{}{}} {
		_, rendered := appendAny(nil, v)
		if rendered != renderable(v) {
			t.Errorf("%T: appendAny renders it %v, renderable says %v", v, rendered, renderable(v))
		}
	}
}
