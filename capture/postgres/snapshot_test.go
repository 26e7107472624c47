package postgres

import (
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/cdcd-dev/cdcd/change"
)

func TestPGSnapshotVisibility(t *testing.T) {
	// Epoch 1: full ids are 2^32 + xid.
	const epoch = uint64(1) << 32
	snap, err := parsePGSnapshot("4294968296:4294968396:4294968300,4294968350")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		xid  uint32
		sees bool
	}{
		{1000, true},       // xmin itself is not running, and below xmax
		{999, true},        // below xmin
		{1004, false},      // running
		{1054, false},      // running
		{1051, true},       // finished between xmin and xmax
		{1100, false},      // xmax: not yet started
		{1200, false},      // after xmax
		{4294967000, true}, // the previous epoch, just before the wrap: long finished
	} {
		if got := snap.sees(tc.xid); got != tc.sees {
			t.Errorf("xid %d (full %d): sees %v, want %v", tc.xid, snap.full(tc.xid), got, tc.sees)
		}
	}
	if got := snap.full(4294967000); got != epoch-296 {
		t.Errorf("full(4294967000) = %d, want %d (the previous epoch)", got, epoch-296)
	}
	for _, bad := range []string{"", "1:2", "a:2:", "3:2:", "1:5:x"} {
		if _, err := parsePGSnapshot(bad); err == nil {
			t.Errorf("parsePGSnapshot(%q) accepted it", bad)
		}
	}
	if s, err := parsePGSnapshot("10:10:"); err != nil || len(s.xip) != 0 {
		t.Errorf("an idle server's snapshot: %v %v", s, err)
	}
}

func testRelation(keys ...int) *relation {
	t := &change.Table{Schema: "my schema", Name: "T", KeyIndexes: keys,
		Columns: []change.Column{{Name: "id"}, {Name: "sub"}, {Name: "v"}}}
	return &relation{table: t, oids: []uint32{23, 25, 25}}
}

func TestChunkQuery(t *testing.T) {
	from, to := "100", "200"
	for _, tc := range []struct {
		name   string
		rel    *relation
		rng    keyRange
		until  []string
		sql    string
		params []string
		oids   []uint32
	}{
		{"first chunk", testRelation(0), keyRange{}, nil,
			`SELECT "id", "sub", "v" FROM "my schema"."T" ORDER BY "id" LIMIT 101`, nil, nil},
		{"next chunk", testRelation(0), keyRange{After: []string{"42"}}, nil,
			`SELECT "id", "sub", "v" FROM "my schema"."T" WHERE ("id") > ($1) ORDER BY "id" LIMIT 101`, []string{"42"}, []uint32{23}},
		{"composite key", testRelation(1, 0), keyRange{After: []string{"b'c", "7"}}, nil,
			`SELECT "id", "sub", "v" FROM "my schema"."T" WHERE ("sub", "id") > ($1, $2) ORDER BY "sub", "id" LIMIT 101`, []string{"b'c", "7"}, []uint32{25, 23}},
		{"first range", testRelation(0), keyRange{To: &from}, nil,
			`SELECT "id", "sub", "v" FROM "my schema"."T" WHERE "id" < $1 ORDER BY "id" LIMIT 101`, []string{"100"}, []uint32{23}},
		{"middle range", testRelation(0), keyRange{From: &from, To: &to}, nil,
			`SELECT "id", "sub", "v" FROM "my schema"."T" WHERE "id" >= $1 AND "id" < $2 ORDER BY "id" LIMIT 101`, []string{"100", "200"}, []uint32{23, 23}},
		{"last range, next chunk", testRelation(0, 1), keyRange{From: &to, After: []string{"250", "x"}}, nil,
			`SELECT "id", "sub", "v" FROM "my schema"."T" WHERE ("id", "sub") > ($1, $2) ORDER BY "id", "sub" LIMIT 101`, []string{"250", "x"}, []uint32{23, 25}},
		{"middle range of a composite key, next chunk", testRelation(0, 1), keyRange{From: &from, To: &to, After: []string{"150", "x"}}, nil,
			`SELECT "id", "sub", "v" FROM "my schema"."T" WHERE ("id", "sub") > ($1, $2) AND "id" < $3 ORDER BY "id", "sub" LIMIT 101`, []string{"150", "x", "200"}, []uint32{23, 25, 23}},
		{"no key", testRelation(), keyRange{}, nil, `SELECT "id", "sub", "v" FROM "my schema"."T" LIMIT 101`, nil, nil},
		{"bounded, next chunk", testRelation(0), keyRange{After: []string{"42"}}, []string{"900"},
			`SELECT "id", "sub", "v" FROM "my schema"."T" WHERE ("id") > ($1) AND ("id") <= ($2) ORDER BY "id" LIMIT 101`, []string{"42", "900"}, []uint32{23, 23}},
		{"bounded range of a composite key", testRelation(0, 1), keyRange{From: &from, To: &to}, []string{"900", "z"},
			`SELECT "id", "sub", "v" FROM "my schema"."T" WHERE "id" >= $1 AND "id" < $2 AND ("id", "sub") <= ($3, $4) ORDER BY "id", "sub" LIMIT 101`, []string{"100", "200", "900", "z"}, []uint32{23, 23, 23, 25}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sql, params, oids := chunkQuery(tc.rel, tc.rng, tc.until, 101)
			if sql != tc.sql {
				t.Errorf("sql\n got %s\nwant %s", sql, tc.sql)
			}
			var got []string
			for _, p := range params {
				got = append(got, string(p))
			}
			if !slices.Equal(got, tc.params) || !slices.Equal(oids, tc.oids) {
				t.Errorf("params %q %v, want %q %v", got, oids, tc.params, tc.oids)
			}
		})
	}
}

// TestSplitRanges: the ranges cover the key space without overlap, cut at histogram bounds.
func TestSplitRanges(t *testing.T) {
	show := func(rs []keyRange) string {
		var b []string
		for i, r := range rs {
			f, to := "-", "-"
			if r.From != nil {
				f = *r.From
			}
			if r.To != nil {
				to = *r.To
			}
			if r.ID != i {
				f = "bad id " + f
			}
			b = append(b, f+".."+to)
		}
		return strings.Join(b, " ")
	}
	hist := []string{"0", "10", "20", "30", "40", "50", "60", "70", "80", "90", "100"}
	for _, tc := range []struct {
		bounds []string
		parts  int
		want   string
	}{
		{hist, 4, "-..20 20..50 50..80 80..-"},
		{hist, 2, "-..50 50..-"},
		{hist, 1, "-..-"},
		{[]string{"5"}, 4, "-..-"},
		{[]string{"1", "2"}, 4, "-..2 2..-"},
		{nil, 3, "-..-"},
	} {
		if got := show(splitRanges(tc.bounds, tc.parts)); got != tc.want {
			t.Errorf("splitRanges(%v, %d) = %s, want %s", tc.bounds, tc.parts, got, tc.want)
		}
	}
}

func row(vals ...any) change.Row {
	r := make(change.Row, len(vals))
	for i, v := range vals {
		switch v := v.(type) {
		case change.Kind:
			r[i] = change.Value{Kind: v}
		default:
			r[i] = change.Value{V: v}
		}
	}
	return r
}

// TestObserve: changes the stream hands on while a chunk waits for its watermark are applied to
// the chunk's rows, so that each row leaves as it is at the watermark.
func TestObserve(t *testing.T) {
	rel := testRelation(0)
	newPending := func() *snapshotter {
		sn := &snapshotter{r: &Reader{log: slog.Default()}}
		p := &pendingChunk{rel: rel, keyed: true, byKey: map[string]int{}}
		for i, id := range []int64{1, 2, 3} {
			r := row(id, "s", "v"+string(rune('0'+id)))
			k, _ := keyString(rel.table, r)
			p.byKey[k] = i
			p.rows = append(p.rows, r)
		}
		sn.pending = []*pendingChunk{p}
		return sn
	}
	other := &change.Table{Schema: "my schema", Name: "other", KeyIndexes: []int{0}}
	for _, tc := range []struct {
		name    string
		changes []*change.Change
		want    string
		dirty   bool
	}{
		{"update", []*change.Change{{Op: change.Update, Table: rel.table, After: row(int64(2), "s", "new")}}, "1 v1|2 new|3 v3", false},
		{"update with an unchanged value", []*change.Change{{Op: change.Update, Table: rel.table, After: row(int64(2), change.Unchanged, "new")}}, "1 v1|2 new|3 v3", false},
		{"delete", []*change.Change{{Op: change.Delete, Table: rel.table, Before: row(int64(1), change.Absent, change.Absent)}}, "2 v2|3 v3", false},
		{"insert of a row the chunk did not read", []*change.Change{{Op: change.Insert, Table: rel.table, After: row(int64(9), "s", "x")}}, "1 v1|2 v2|3 v3", false},
		{"key change", []*change.Change{{Op: change.Update, Table: rel.table, KeyChanged: true, Before: row(int64(3), change.Absent, change.Absent), After: row(int64(1), "s", "moved")}},
			"1 moved|2 v2", false},
		{"truncate", []*change.Change{{Op: change.Truncate, Table: rel.table}}, "", false},
		{"another table", []*change.Change{{Op: change.Delete, Table: other, Before: row(int64(1))}}, "1 v1|2 v2|3 v3", false},
		{"a key the image lacks", []*change.Change{{Op: change.Update, Table: rel.table, After: row(change.Unchanged, "s", "x")}}, "1 v1|2 v2|3 v3", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sn := newPending()
			for _, c := range tc.changes {
				sn.observe(c)
			}
			var got []string
			for _, r := range sn.pending[0].rows {
				if r != nil {
					got = append(got, strings.TrimSpace(strings.Join([]string{fmtValue(r[0]), fmtValue(r[2])}, " ")))
				}
			}
			if strings.Join(got, "|") != tc.want || sn.pending[0].dirty != tc.dirty {
				t.Errorf("rows %q dirty %v, want %q dirty %v", strings.Join(got, "|"), sn.pending[0].dirty, tc.want, tc.dirty)
			}
			if tc.name == "update with an unchanged value" && sn.pending[0].rows[1][1].V != "s" {
				t.Errorf("the unchanged value was not kept from the chunk: %v", sn.pending[0].rows[1][1])
			}
		})
	}
}

func fmtValue(v change.Value) string {
	if v.Kind != change.Present {
		return "?"
	}
	switch x := v.V.(type) {
	case int64:
		return string(rune('0' + x))
	case string:
		return x
	}
	return "?"
}

func TestCopyState(t *testing.T) {
	cut := "500"
	st := copyState{Tables: []tableCopy{
		{Schema: "public", Name: "a", Chunks: 3, Rows: 30000, Split: true, Ranges: []keyRange{{ID: 0, To: &cut, After: []string{"x,y", "1"}}, {ID: 1, From: &cut}}},
		newTableCopy("s", "b")}}
	back, err := parseCopyState(st.encode())
	if err != nil || len(back.Tables) != 2 || back.Tables[0].Rows != 30000 || back.Tables[1].qualified() != "s.b" {
		t.Fatalf("round trip: %+v %v", back, err)
	}
	if rs := back.Tables[0].Ranges; len(rs) != 2 || !slices.Equal(rs[0].After, []string{"x,y", "1"}) || *rs[0].To != "500" || rs[0].From != nil || *rs[1].From != "500" || rs[1].ID != 1 {
		t.Errorf("ranges round trip: %+v", rs)
	}
	if back.Tables[1].Split || len(back.Tables[1].Ranges) != 1 {
		t.Errorf("a table not begun: %+v", back.Tables[1])
	}
	// Version 1: one position per table.
	v1, err := parseCopyState(`{"v":1,"tables":[{"schema":"public","name":"a","after":["7"],"chunks":2,"rows":20},{"schema":"s","name":"b"}]}`)
	if err != nil || len(v1.Tables) != 2 || !v1.Tables[0].Split || len(v1.Tables[0].Ranges) != 1 || !slices.Equal(v1.Tables[0].Ranges[0].After, []string{"7"}) ||
		v1.Tables[0].After != nil || v1.Tables[1].Split || len(v1.Tables[1].Ranges) != 1 {
		t.Errorf("version 1: %+v %v", v1, err)
	}
	if (&copyState{}).encode() != "" {
		t.Error("a state with no tables left is not empty")
	}
	for _, bad := range []string{"{", `{"v":3,"tables":[]}`, `{"v":2,"tables":[{"schema":"s","name":"b","ranges":[]}]}`} {
		if _, err := parseCopyState(bad); err == nil {
			t.Errorf("parseCopyState(%q) accepted it", bad)
		}
	}
}
