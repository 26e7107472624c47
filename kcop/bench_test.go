package kcop

import (
	"context"
	crand "crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cdcd-dev/cdcd/change"
	"github.com/cdcd-dev/cdcd/internal/testenv"
)

// benchRow is one update of a six-column order, the before image included.
func benchRow(i int) *change.Change {
	tbl := benchTable
	row := change.Row{{V: int64(i)}, {V: "customer 42"}, {V: change.Decimal("612.50")}, {V: "someone@example.com"},
		{V: time.Date(2026, 11, 30, 8, 0, 0, 123456000, time.UTC)}, {Kind: change.Null}}
	return &change.Change{Op: change.Update, Table: tbl, Txn: &change.Txn{ID: "771", Position: "0/16B3748", CommitTime: time.Now()},
		Before: row, After: row, Index: int64(i)}
}

var benchTable = &change.Table{Database: "shop", Schema: "public", Name: "orders", FullBeforeImage: true,
	Columns: []change.Column{{Name: "id", Type: "int8", Key: true}, {Name: "customer", Type: "text"}, {Name: "total", Type: "numeric"},
		{Name: "email", Type: "text"}, {Name: "created", Type: "timestamptz"}, {Name: "note", Type: "text"}}, KeyIndexes: []int{0}}

func benchKeys(b *testing.B) (public, hmacKey string) {
	dir := b.TempDir()
	key, err := rsa.GenerateKey(crand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	public, hmacKey = filepath.Join(dir, "public.pem"), filepath.Join(dir, "hmac.key")
	if err := os.WriteFile(public, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(hmacKey, []byte("0123456789abcdef0123456789abcdef"), 0o600); err != nil {
		b.Fatal(err)
	}
	return public, hmacKey
}

// BenchmarkKCOP: each built-in KCOP on one update of a six-column row (both images), per row. The
// Avro KCOPs need the registry of scripts/stack.sh (only for their first row).
func BenchmarkKCOP(b *testing.B) {
	public, hmacKey := benchKeys(b)
	registry := func() string { return testenv.RegistryURL(b) }
	for _, tc := range []struct {
		name string
		opts func() map[string]any
	}{
		{"json", func() map[string]any { return map[string]any{} }},
		{"json-audit", func() map[string]any { return map[string]any{} }},
		{"csv-audit", func() map[string]any { return map[string]any{} }},
		{"avro", func() map[string]any { return map[string]any{"registry_url": registry(), "topic": "bench.avro"} }},
		{"avro-audit", func() map[string]any { return map[string]any{"registry_url": registry(), "topic": "bench.avro-audit"} }},
		{"avro-audit-rows", func() map[string]any {
			return map[string]any{"registry_url": registry(), "topic": "bench.avro-audit-rows"}
		}},
		{"filter", func() map[string]any { return map[string]any{"where": `op in ["c", "u"] && after.total > 500`} }},
		{"project", func() map[string]any { return map[string]any{"columns": []any{"total", "email"}} }},
		{"mask", func() map[string]any { return map[string]any{"columns": []any{"email"}} }},
		{"hash", func() map[string]any { return map[string]any{"columns": []any{"email"}, "key_file": hmacKey} }},
		{"encrypt", func() map[string]any { return map[string]any{"columns": []any{"email"}, "public_key_file": public} }},
		{"txn-alert", func() map[string]any { return map[string]any{"sum": "total", "over": "500", "topic": "alerts"} }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			k, err := New(tc.name, NewOptions(tc.opts()))
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			c := benchRow(1)
			step := func(c *change.Change, dst []Record) ([]Record, error) {
				if f, ok := k.(Filter); ok {
					if _, err := f.Keep(ctx, c); err != nil {
						return dst, err
					}
				}
				if t, ok := k.(Transformer); ok {
					_, err := t.Transform(ctx, c)
					return dst, err
				}
				return k.Process(ctx, c, dst)
			}
			if o, ok := k.(TxnObserver); ok {
				_ = o.BeginTxn(ctx, c.Txn)
			}
			var dst []Record
			if dst, err = step(c, dst); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if dst, err = step(c, dst[:0]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkStageWorkers: the stage running a chain of encrypt and json on the changes of one large
// transaction, with one worker and with four, per row.
func BenchmarkStageWorkers(b *testing.B) {
	public, _ := benchKeys(b)
	enc, err := New("encrypt", NewOptions(map[string]any{"columns": []any{"email", "customer"}, "public_key_file": public}))
	if err != nil {
		b.Fatal(err)
	}
	js, _ := New("json", NewOptions(map[string]any{}))
	for _, workers := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			s := NewStage(Chain{enc, js}, discardSink{}, nil)
			s.SetWorkers(workers)
			ctx := context.Background()
			c := benchRow(1)
			if err := s.Begin(ctx, c.Txn); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := s.Change(ctx, c); err != nil {
					b.Fatal(err)
				}
			}
			if err := s.Commit(ctx, &change.Commit{Txn: c.Txn}); err != nil {
				b.Fatal(err)
			}
		})
	}
}

type discardSink struct{}

func (discardSink) Begin(context.Context, *change.Txn) error                { return nil }
func (discardSink) Records(context.Context, *change.Change, []Record) error { return nil }
func (discardSink) Commit(context.Context, *change.Commit, []Record) error  { return nil }

// BenchmarkJSONWide: the json KCOP on an insert of cdcd-bench's wide row (20 typed columns), per
// row, with the values the PostgreSQL decoder gives them.
func BenchmarkJSONWide(b *testing.B) {
	cols := []change.Column{{Name: "id", Type: "int8", Key: true}, {Name: "payload", Type: "text"}, {Name: "amount", Type: "numeric"},
		{Name: "at", Type: "timestamptz"}, {Name: "i2", Type: "int2"}, {Name: "i4", Type: "int4"}, {Name: "i8", Type: "int8"},
		{Name: "f8", Type: "float8"}, {Name: "f4", Type: "float4"}, {Name: "n", Type: "numeric"}, {Name: "b", Type: "bool"},
		{Name: "d", Type: "date"}, {Name: "ts", Type: "timestamp"}, {Name: "tstz", Type: "timestamptz"}, {Name: "iv", Type: "interval"},
		{Name: "u", Type: "uuid"}, {Name: "j", Type: "jsonb"}, {Name: "tags", Type: "_text"}, {Name: "vals", Type: "_int4"},
		{Name: "name", Type: "varchar"}}
	tbl := &change.Table{Database: "cdcd", Schema: "bench", Name: "rows", Columns: cols, KeyIndexes: []int{0}}
	at := time.Date(2026, 12, 1, 21, 45, 8, 123456000, time.UTC)
	row := change.Row{{V: int64(123457)}, {V: "e10adc3949ba59abbe56e057f20f883e5d41402abc4b2a76b9719d911017c592"},
		{V: change.Decimal("234.57")}, {V: at}, {V: int64(27457)}, {V: int64(864199)}, {V: int64(123457370395371)},
		{V: 185.1855}, {V: float32(41152.332)}, {V: change.Decimal("1524181823.467857")}, {V: false},
		{V: change.Date("2020-10-19")}, {V: change.Timestamp("2020-01-03T03:26:25.5")}, {V: at.Add(-123457 * time.Millisecond)},
		{V: change.Interval{Microseconds: 37057_000_000}}, {V: "e10adc39-49ba-59ab-be56-e057f20f883e"},
		{V: change.JSON(`{"id": 123457, "tag": "x7"}`)}, {V: []any{"a7", "b"}}, {V: []any{int64(57), int64(5), int64(3)}},
		{V: "name 123457"}}
	c := &change.Change{Op: change.Insert, Table: tbl, After: row, Txn: &change.Txn{ID: "771", Position: "0/16B3748", CommitTime: at}}
	k, err := New("json", NewOptions(map[string]any{}))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var recs []Record
	b.ReportAllocs()
	for b.Loop() {
		if recs, err = k.Process(ctx, c, recs[:0]); err != nil {
			b.Fatal(err)
		}
	}
}
