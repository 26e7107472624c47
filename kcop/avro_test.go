package kcop

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"

	"github.com/cdcd-dev/cdcd/change"
	"github.com/cdcd-dev/cdcd/internal/testenv"
)

// decodeConfluent reads a record in Confluent's wire format with the schema the registry holds
// under its id.
func decodeConfluent(t *testing.T, base string, b []byte) (map[string]any, uint32) {
	t.Helper()
	if len(b) < 5 || b[0] != 0 {
		t.Fatalf("not Confluent's wire format: % x", b)
	}
	id := binary.BigEndian.Uint32(b[1:5])
	resp, err := http.Get(fmt.Sprintf("%s/schemas/ids/%d", base, id))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s struct{ Schema string }
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatalf("schema %d: %v", id, err)
	}
	codec, err := goavro.NewCodec(s.Schema)
	if err != nil {
		t.Fatalf("schema %d: %v", id, err)
	}
	native, rest, err := codec.NativeFromBinary(b[5:])
	if err != nil || len(rest) != 0 {
		t.Fatalf("decoding with schema %d: %v (%d bytes left)", id, err, len(rest))
	}
	return native.(map[string]any), id
}

// TestAvroThroughTheRegistry: records written by the avro KCOP decode, with the schemas the real
// registry serves for their ids, to the values written by hand here.
func TestAvroThroughTheRegistry(t *testing.T) {
	base := testenv.RegistryURL(t)
	topic := fmt.Sprintf("avro-test-%06d", rand.IntN(1_000_000))
	k, err := New("avro", NewOptions(map[string]any{"registry_url": base, "topic": topic}))
	if err != nil {
		t.Fatal(err)
	}
	tbl := &change.Table{Database: "shop", Schema: "public", Name: "orders",
		Columns: []change.Column{{Name: "id", Type: "int8", Key: true}, {Name: "total", Type: "numeric"}, {Name: "ratio", Type: "float4"},
			{Name: "big", Type: "bigint unsigned"}, {Name: "paid", Type: "bool"}, {Name: "photo", Type: "bytea"}, {Name: "at", Type: "timestamptz"},
			{Name: "note-text", Type: "text"}},
		KeyIndexes: []int{0}}
	txn := &change.Txn{ID: "5"}
	after := change.Row{{V: int64(7)}, {V: change.Decimal("12.5000")}, {V: float32(0.1)}, {V: uint64(18446744073709551615)}, {V: true},
		{V: []byte{0, 0xff}}, {V: time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC)}, {Kind: change.Null}}
	recs, err := k.Process(context.Background(), &change.Change{Op: change.Insert, Table: tbl, Txn: txn, After: after}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Topic != topic {
		t.Fatalf("records %v", recs)
	}
	key, keyID := decodeConfluent(t, base, recs[0].Key)
	value, valueID := decodeConfluent(t, base, recs[0].Value)
	if want := map[string]any{"id": int64(7)}; !reflect.DeepEqual(key, want) {
		t.Errorf("key %v, want %v", key, want)
	}
	want := map[string]any{"id": map[string]any{"long": int64(7)}, "total": map[string]any{"string": "12.5000"},
		"ratio": map[string]any{"float": float32(0.1)}, "big": map[string]any{"string": "18446744073709551615"},
		"paid": map[string]any{"boolean": true}, "photo": map[string]any{"bytes": []byte{0, 0xff}},
		"at": map[string]any{"string": "2026-01-02T03:04:05.123456Z"}, "note_text": nil}
	if !reflect.DeepEqual(value, want) {
		t.Errorf("value %v\nwant  %v", value, want)
	}

	// A key change: the old key's tombstone, then the new row, under the same schema ids.
	before := after
	after2 := append(change.Row{{V: int64(8)}}, after[1:]...)
	recs, err = k.Process(context.Background(), &change.Change{Op: change.Update, Table: tbl, Txn: txn, Before: before, After: after2, KeyChanged: true}, nil)
	if err != nil || len(recs) != 2 || recs[0].Value != nil {
		t.Fatalf("key change: %v %v", recs, err)
	}
	if k0, id := decodeConfluent(t, base, recs[0].Key); k0["id"] != int64(7) || id != keyID {
		t.Errorf("the key change's tombstone has key %v (schema %d)", k0, id)
	}
	if v, id := decodeConfluent(t, base, recs[1].Value); !reflect.DeepEqual(v["id"], map[string]any{"long": int64(8)}) || id != valueID {
		t.Errorf("the key change's new row %v (schema %d)", v, id)
	}

	// A new column: a new schema version under the same subject.
	tbl2 := *tbl
	tbl2.Columns = append(append([]change.Column(nil), tbl.Columns...), change.Column{Name: "added", Type: "int4"})
	recs, err = k.Process(context.Background(), &change.Change{Op: change.Insert, Table: &tbl2, Txn: txn, After: append(append(change.Row(nil), after...), change.Value{V: int64(1)})}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if v, id := decodeConfluent(t, base, recs[0].Value); id == valueID || !reflect.DeepEqual(v["added"], map[string]any{"long": int64(1)}) {
		t.Errorf("after ADD COLUMN: schema %d (was %d), value %v", id, valueID, v)
	}
}

func TestAvroRefusesWhatItCannotWrite(t *testing.T) {
	base := testenv.RegistryURL(t)
	k, err := New("avro", NewOptions(map[string]any{"registry_url": base, "topic": fmt.Sprintf("avro-refuse-%06d", rand.IntN(1_000_000))}))
	if err != nil {
		t.Fatal(err)
	}
	tbl := &change.Table{Schema: "public", Name: "docs", Columns: []change.Column{{Name: "id", Type: "int4", Key: true}, {Name: "body", Type: "text"}}, KeyIndexes: []int{0}}
	_, err = k.Process(context.Background(), &change.Change{Op: change.Update, Table: tbl, Txn: &change.Txn{ID: "1"},
		After: change.Row{{V: int64(1)}, {Kind: change.Unchanged}}}, nil)
	if err == nil || !strings.Contains(err.Error(), "REPLICA IDENTITY FULL") || !strings.Contains(err.Error(), "body") {
		t.Errorf("an unsent value: err = %v", err)
	}
	_, err = k.Process(context.Background(), &change.Change{Op: change.Insert, Table: tbl, Txn: &change.Txn{ID: "1"},
		After: change.Row{{V: "not a number"}, {V: "x"}}}, nil)
	if err == nil || !strings.Contains(err.Error(), "column id") {
		t.Errorf("a string in a long column: err = %v", err)
	}
}

// TestAvroRegistryDownIsRetryable: a registry nobody answers at is a passing failure, which the
// stage retries; options naming no registry are refused at once.
func TestAvroRegistryDownIsRetryable(t *testing.T) {
	k, err := New("avro", NewOptions(map[string]any{"registry_url": "http://127.0.0.1:1", "timeout": "1s"}))
	if err != nil {
		t.Fatal(err)
	}
	tbl := &change.Table{Schema: "public", Name: "t", Columns: []change.Column{{Name: "id", Type: "int4", Key: true}}, KeyIndexes: []int{0}}
	_, err = k.Process(context.Background(), &change.Change{Op: change.Insert, Table: tbl, Txn: &change.Txn{ID: "1"}, After: change.Row{{V: int64(1)}}}, nil)
	if err == nil || !IsRetryable(err) {
		t.Errorf("err = %v, want a retryable error", err)
	}
	for _, opts := range []map[string]any{{}, {"registry_url": "http://x", "deletes": "sometimes"}} {
		if _, err := New("avro", NewOptions(opts)); err == nil {
			t.Errorf("%v: no error", opts)
		}
	}
}

// TestAvroSchemaEvolution: cdcd sets its subjects to BACKWARD; an added column registers a new
// version; a changed column type is refused by the registry, and the error names the table and the
// column, and is terminal.
func TestAvroSchemaEvolution(t *testing.T) {
	base := testenv.RegistryURL(t)
	topic := fmt.Sprintf("avro-evolve-%06d", rand.IntN(1_000_000))
	k, err := New("avro", NewOptions(map[string]any{"registry_url": base, "topic": topic}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	txn := &change.Txn{ID: "1"}
	v1 := &change.Table{Schema: "public", Name: "items", Columns: []change.Column{{Name: "id", Type: "int8", Key: true}, {Name: "n", Type: "int4"}}, KeyIndexes: []int{0}}
	recs, err := k.Process(ctx, &change.Change{Op: change.Insert, Table: v1, Txn: txn, After: change.Row{{V: int64(1)}, {V: int64(2)}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, id1 := decodeConfluent(t, base, recs[0].Value)
	resp, err := http.Get(base + "/config/" + topic + "-value")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct{ CompatibilityLevel string }
	_ = json.NewDecoder(resp.Body).Decode(&cfg)
	resp.Body.Close()
	if cfg.CompatibilityLevel != "BACKWARD" {
		t.Errorf("the value subject's compatibility is %q, want BACKWARD", cfg.CompatibilityLevel)
	}

	v2 := &change.Table{Schema: "public", Name: "items", Columns: append(append([]change.Column(nil), v1.Columns...), change.Column{Name: "note", Type: "text"}), KeyIndexes: []int{0}}
	recs, err = k.Process(ctx, &change.Change{Op: change.Insert, Table: v2, Txn: txn, After: change.Row{{V: int64(2)}, {V: int64(3)}, {V: "x"}}}, nil)
	if err != nil {
		t.Fatalf("an added column: %v", err)
	}
	if _, id2 := decodeConfluent(t, base, recs[0].Value); id2 == id1 {
		t.Errorf("an added column kept schema %d", id1)
	}

	v3 := &change.Table{Schema: "public", Name: "items", Columns: []change.Column{{Name: "id", Type: "int8", Key: true}, {Name: "n", Type: "text"}, {Name: "note", Type: "text"}}, KeyIndexes: []int{0}}
	_, err = k.Process(ctx, &change.Change{Op: change.Insert, Table: v3, Txn: txn, After: change.Row{{V: int64(3)}, {V: "three"}, {V: "x"}}}, nil)
	if err == nil {
		t.Fatal("a column changed from int4 to text was accepted under BACKWARD")
	}
	for _, want := range []string{"public.items", "column n changed from long to string", "compatibility BACKWARD"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal %q does not say %q", err, want)
		}
	}
	if IsRetryable(err) {
		t.Errorf("a refused schema is retryable, which would loop: %v", err)
	}

	if _, err := New("avro", NewOptions(map[string]any{"registry_url": base, "compatibility": "sideways"})); err == nil || !strings.Contains(err.Error(), "compatibility") {
		t.Errorf("a bad compatibility level: err = %v", err)
	}
}
