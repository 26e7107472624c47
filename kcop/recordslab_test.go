package kcop

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/cdcd-dev/cdcd/change"
)

// TestRecordSlabKeepsRecordsApart: records rendered one after another into a slab (small ones
// sharing chunks, some outgrowing their room, some larger than a chunk's quarter) keep their bytes
// while more are rendered, and appending to one never reaches another.
func TestRecordSlabKeepsRecordsApart(t *testing.T) {
	var sl recordSlab
	var got [][]byte
	var want []string
	for i := range 5000 {
		hint, size := 64, 10+i%200
		switch {
		case i%97 == 0:
			size = 3000 // outgrows its room
		case i%389 == 0:
			hint, size = 12000, 11000 // its own allocation
		}
		text := strings.Repeat(string(rune('a'+i%26)), size) + fmt.Sprint(i)
		b := sl.end(append(sl.begin(hint), text...))
		if cap(b) != len(b) {
			t.Fatalf("record %d: capacity %d past its length %d", i, cap(b), len(b))
		}
		got, want = append(got, b), append(want, text)
		if i%10 == 0 {
			_ = append(got[i/2], "overwrite"...) // must land in an allocation of its own
		}
	}
	if sl.end(nil) != nil {
		t.Errorf("end(nil) is not nil")
	}
	for i := range got {
		if string(got[i]) != want[i] {
			t.Fatalf("record %d changed: %.40q..., want %.40q...", i, got[i], want[i])
		}
	}
}

// TestJSONRecordsStayAsRendered: the json KCOP's records share chunks; those it returned earlier,
// kept by the caller as the writer keeps them until they are in Kafka, are byte for byte what
// they were when returned, across deletes with tombstones, key changes and inserts, with four
// workers rendering at once (run with -race).
func TestJSONRecordsStayAsRendered(t *testing.T) {
	tbl := &change.Table{Database: "d", Schema: "s", Name: "t", KeyIndexes: []int{0},
		Columns: []change.Column{{Name: "id", Type: "int8", Key: true}, {Name: "v", Type: "text"}}}
	k, err := New("json", NewOptions(map[string]any{"tombstones": true}))
	if err != nil {
		t.Fatal(err)
	}
	txn := &change.Txn{ID: "1", Position: "0/1"}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var kept []Record
			var copies [][2][]byte
			for i := range 3000 {
				row := func(id int) change.Row {
					return change.Row{{V: int64(id)}, {V: strings.Repeat("x", (i*7+w)%900) + fmt.Sprint(w, i)}}
				}
				c := &change.Change{Table: tbl, Txn: txn, Index: int64(i)}
				switch i % 3 {
				case 0:
					c.Op, c.After = change.Insert, row(i)
				case 1:
					c.Op, c.Before = change.Delete, row(i)
				case 2:
					c.Op, c.Before, c.After, c.KeyChanged = change.Update, row(i), row(i+1), true
				}
				recs, err := k.Process(context.Background(), c, nil)
				if err != nil {
					t.Error(err)
					return
				}
				for _, r := range recs {
					kept = append(kept, r)
					copies = append(copies, [2][]byte{bytes.Clone(r.Key), bytes.Clone(r.Value)})
				}
			}
			for i, r := range kept {
				if !bytes.Equal(r.Key, copies[i][0]) || !bytes.Equal(r.Value, copies[i][1]) || (r.Value == nil) != (copies[i][1] == nil) {
					t.Errorf("worker %d, record %d changed after it was returned: key %q value %.60q, was %q %.60q",
						w, i, r.Key, r.Value, copies[i][0], copies[i][1])
					return
				}
			}
		}()
	}
	wg.Wait()
}
