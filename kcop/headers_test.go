package kcop

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cdcd-dev/cdcd/change"
)

// TestWithHeaders: each header source, on every record the KCOP writes for a change and on the
// records closing a transaction; a missing column is named with its table.
func TestWithHeaders(t *testing.T) {
	js, err := New("json", NewOptions(map[string]any{"topic": "t"}))
	if err != nil {
		t.Fatal(err)
	}
	k, err := WithHeaders(js, map[string]string{"o": "op", "x": "txid", "p": "pos", "w": "ts", "tb": "table", "i": "op_index",
		"s": "snapshot", "region": "column.region", "n": "column.note"})
	if err != nil {
		t.Fatal(err)
	}
	tbl := &change.Table{Schema: "public", Name: "orders", Columns: []change.Column{{Name: "id", Type: "int4", Key: true},
		{Name: "region", Type: "text"}, {Name: "note", Type: "text"}}, KeyIndexes: []int{0}}
	txn := &change.Txn{ID: "42", Position: "0/10", CommitTime: time.Date(2026, 11, 30, 1, 2, 3, 456789000, time.UTC)}
	ctx := context.Background()
	headers := func(r Record) map[string]any {
		m := map[string]any{}
		for _, h := range r.Headers {
			if h.Value == nil {
				m[h.Key] = nil
			} else {
				m[h.Key] = string(h.Value)
			}
		}
		return m
	}
	audit := map[string]any{"o": "d", "x": "42", "p": "0/10", "w": "2026-11-30T01:02:03.456789Z", "tb": "public.orders", "i": "3", "s": "false"}
	// A delete: the record and its tombstone both carry the headers, the columns from the before
	// image; a NULL column gives a header without a value.
	recs, err := k.Process(ctx, &change.Change{Op: change.Delete, Index: 3, Table: tbl, Txn: txn,
		Before: change.Row{{V: int64(1)}, {V: "north"}, {Kind: change.Null}}}, nil)
	if err != nil || len(recs) != 2 {
		t.Fatalf("%v %v", recs, err)
	}
	want := map[string]any{"region": "north", "n": nil}
	for k, v := range audit {
		want[k] = v
	}
	for _, r := range recs {
		if got := headers(r); !reflect.DeepEqual(got, want) {
			t.Errorf("headers %v\nwant    %v", got, want)
		}
	}
	// An unsent value gives no header.
	recs, err = k.Process(ctx, &change.Change{Op: change.Update, Index: 4, Table: tbl, Txn: txn,
		After: change.Row{{V: int64(1)}, {V: "south"}, {Kind: change.Unchanged}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := headers(recs[0]); got["region"] != "south" || got["o"] != "u" || got["i"] != "4" {
		t.Errorf("an update: headers %v", got)
	} else if _, ok := got["n"]; ok {
		t.Errorf("an unsent column gave header n")
	}
	// The records that close a transaction get its fields.
	alert, err := New("txn-alert", NewOptions(map[string]any{"sum": "total", "over": "500", "topic": "a"}))
	if err != nil {
		t.Fatal(err)
	}
	if alert, err = WithHeaders(alert, map[string]string{"x": "txid", "o": "op"}); err != nil {
		t.Fatal(err)
	}
	orders := &change.Table{Schema: "public", Name: "orders", Columns: []change.Column{{Name: "id", Type: "int4", Key: true}, {Name: "total", Type: "numeric"}}, KeyIndexes: []int{0}}
	o := alert.(TxnObserver)
	if err := o.BeginTxn(ctx, txn); err != nil {
		t.Fatal(err)
	}
	if _, err := alert.Process(ctx, &change.Change{Op: change.Insert, Table: orders, Txn: txn, After: change.Row{{V: int64(1)}, {V: change.Decimal("600.50")}}}, nil); err != nil {
		t.Fatal(err)
	}
	closing, err := o.CommitTxn(ctx, &change.Commit{Txn: txn, Changes: 1}, nil)
	if err != nil || len(closing) != 1 {
		t.Fatalf("closing records %v, %v", closing, err)
	}
	if got := headers(closing[0]); !reflect.DeepEqual(got, map[string]any{"x": "42"}) {
		t.Errorf("the closing record's headers %v, want the transaction id only", got)
	}
	other := &change.Table{Schema: "public", Name: "items", Columns: []change.Column{{Name: "id", Type: "int4", Key: true}}, KeyIndexes: []int{0}}
	if _, err := k.Process(ctx, &change.Change{Op: change.Insert, Table: other, Txn: txn, After: change.Row{{V: int64(1)}}}, nil); err == nil ||
		!strings.Contains(err.Error(), "public.items has no column note") {
		t.Errorf("a missing column: err = %v", err)
	}
}
