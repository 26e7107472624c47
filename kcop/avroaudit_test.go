package kcop

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/cdcd-dev/cdcd/change"
	"github.com/cdcd-dev/cdcd/internal/testenv"
)

// TestAvroAuditFormats: each change through avro-audit (single row) and avro-audit-rows (multi
// row), decoded with the schemas the real registry serves for the ids in the records, against the
// records written here by hand from IBM's definitions of the formats.
func TestAvroAuditFormats(t *testing.T) {
	base := testenv.RegistryURL(t)
	tbl := &change.Table{Database: "shop", Schema: "public", Name: "orders",
		Columns:    []change.Column{{Name: "id", Type: "int8", Key: true}, {Name: "total", Type: "numeric"}, {Name: "note", Type: "text"}},
		KeyIndexes: []int{0}, FullBeforeImage: true}
	at := time.Date(2026, 11, 30, 8, 8, 7, 654321000, time.UTC)
	txn := &change.Txn{ID: "771", Position: "0/16B3748", CommitTime: at}
	row := func(id int64, total string, note change.Value) change.Row {
		return change.Row{{V: id}, {V: change.Decimal(total)}, note}
	}
	changes := []*change.Change{
		{Op: change.Insert, Index: 0, After: row(1, "10.50", change.Value{V: "first"})},
		{Op: change.Update, Index: 1, Before: row(1, "10.50", change.Value{V: "first"}), After: row(1, "11.50", change.Value{Kind: change.Null})},
		{Op: change.Update, Index: 2, Before: row(1, "11.50", change.Value{Kind: change.Null}), After: row(2, "11.50", change.Value{Kind: change.Unchanged}), KeyChanged: true},
		{Op: change.Delete, Index: 3, Before: row(2, "11.50", change.Value{V: "x"})},
		{Op: change.Truncate, Index: 4},
	}
	image := func(id int64, total string, note any) map[string]any {
		n := any(nil)
		if note != nil {
			n = map[string]any{"string": note}
		}
		return map[string]any{"id": map[string]any{"long": id}, "total": map[string]any{"string": total}, "note": n}
	}
	audit := func(op string, index int64, unsent ...any) map[string]any {
		if unsent == nil {
			unsent = []any{}
		}
		return map[string]any{"AUD_OP": op, "AUD_TS": map[string]any{"string": "2026-11-30T08:08:07.654Z"}, "AUD_TXID": "771",
			"AUD_POS": "0/16B3748", "AUD_TABLE": "public.orders", "AUD_OP_INDEX": index, "AUD_UNSENT": unsent}
	}
	with := func(m map[string]any, more map[string]any) map[string]any {
		out := map[string]any{}
		for k, v := range m {
			out[k] = v
		}
		for k, v := range more {
			out[k] = v
		}
		return out
	}
	const imageName = "shop.public.orders_image"
	single := []map[string]any{
		with(audit("c", 0), map[string]any{"beforeImage": nil, "afterImage": map[string]any{imageName: image(1, "10.50", "first")}}),
		with(audit("u", 1), map[string]any{"beforeImage": map[string]any{imageName: image(1, "10.50", "first")}, "afterImage": map[string]any{imageName: image(1, "11.50", nil)}}),
		with(audit("u", 2, "note"), map[string]any{"beforeImage": map[string]any{imageName: image(1, "11.50", nil)}, "afterImage": map[string]any{imageName: image(2, "11.50", nil)}}),
		with(audit("d", 3), map[string]any{"beforeImage": map[string]any{imageName: image(2, "11.50", "x")}, "afterImage": nil}),
		with(audit("t", 4), map[string]any{"beforeImage": nil, "afterImage": nil}),
	}
	flat := func(a map[string]any, img string, im map[string]any) map[string]any {
		out := with(a, im)
		out["AUD_IMAGE"] = map[string]any{"string": img}
		return out
	}
	multi := []map[string]any{
		flat(audit("c", 0), "after", image(1, "10.50", "first")),
		flat(audit("u", 1), "before", image(1, "10.50", "first")),
		flat(audit("u", 1), "after", image(1, "11.50", nil)),
		flat(audit("u", 2), "before", image(1, "11.50", nil)),
		flat(audit("u", 2, "note"), "after", image(2, "11.50", nil)),
		flat(audit("d", 3), "before", image(2, "11.50", "x")),
		with(audit("t", 4), map[string]any{"AUD_IMAGE": nil, "id": nil, "total": nil, "note": nil}),
	}
	keys := map[string][]any{"avro-audit": {int64(1), int64(1), int64(2), int64(2), nil},
		// The before record of the key change goes by the old key.
		"avro-audit-rows": {int64(1), int64(1), int64(1), int64(1), int64(2), int64(2), nil}}
	for name, want := range map[string][]map[string]any{"avro-audit": single, "avro-audit-rows": multi} {
		t.Run(name, func(t *testing.T) {
			topic := fmt.Sprintf("%s-%06d", name, rand.IntN(1_000_000))
			k, err := New(name, NewOptions(map[string]any{"registry_url": base, "topic": topic}))
			if err != nil {
				t.Fatal(err)
			}
			var recs []Record
			for _, c := range changes {
				c.Table, c.Txn = tbl, txn
				if recs, err = k.Process(context.Background(), c, recs); err != nil {
					t.Fatal(err)
				}
			}
			if len(recs) != len(want) {
				t.Fatalf("%d records, want %d", len(recs), len(want))
			}
			for i, r := range recs {
				if r.Topic != topic {
					t.Errorf("record %d: topic %s", i, r.Topic)
				}
				if wk := keys[name][i]; wk == nil {
					if r.Key != nil {
						t.Errorf("record %d: a key for a truncate", i)
					}
				} else if key, _ := decodeConfluent(t, base, r.Key); key["id"] != wk {
					t.Errorf("record %d: key %v, want id %v", i, key, wk)
				}
				got, _ := decodeConfluent(t, base, r.Value)
				if !reflect.DeepEqual(got, want[i]) {
					t.Errorf("record %d:\n got  %v\n want %v", i, got, want[i])
				}
			}
		})
	}
}
