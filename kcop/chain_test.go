package kcop

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cdcd-dev/cdcd/change"
)

var ordersTable = &change.Table{Database: "shop", Schema: "public", Name: "orders",
	Columns:    []change.Column{{Name: "id", Key: true}, {Name: "total"}, {Name: "email"}, {Name: "note"}},
	KeyIndexes: []int{0}}

func order(op change.Op, id int64, total string, email string) *change.Change {
	row := change.Row{{V: id}, {V: change.Decimal(total)}, {V: email}, {Kind: change.Null}}
	c := &change.Change{Op: op, Table: ordersTable, Txn: &change.Txn{ID: "9"}}
	if op == change.Delete {
		c.Before = row
	} else {
		c.After = row
	}
	return c
}

func build(t *testing.T, entries ...map[string]any) KCOP {
	t.Helper()
	var ch Chain
	for _, e := range entries {
		opts := map[string]any{}
		var name string
		for k, v := range e {
			if k == "type" {
				name = v.(string)
				continue
			}
			opts[k] = v
		}
		k, err := New(name, NewOptions(opts))
		if err != nil {
			t.Fatal(err)
		}
		ch = append(ch, k)
	}
	return ch
}

func values(t *testing.T, recs []Record) []string {
	t.Helper()
	var out []string
	for _, r := range recs {
		out = append(out, r.Topic+" "+string(r.Key)+" "+strings.SplitN(string(r.Value), `,"op"`, 2)[0])
	}
	return out
}

// TestChainFilterProjectMaskHash: a filter drops what its expression rejects before anything is
// written; projections and masks apply to the formatters after them only.
func TestChainFilterProjectMaskHash(t *testing.T) {
	key := filepath.Join(t.TempDir(), "hmac.key")
	if err := os.WriteFile(key, []byte("0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	k := build(t,
		map[string]any{"type": "filter", "where": `op != "d" && after.total > 500`},
		map[string]any{"type": "json", "topic": "restricted", "tombstones": false},
		map[string]any{"type": "hash", "columns": []any{"email"}, "key_file": key},
		map[string]any{"type": "project", "columns": "total,email"},
		map[string]any{"type": "json", "topic": "shared"},
	)
	recs, err := k.Process(context.Background(), order(change.Insert, 1, "500.01", "ann@example.com"), nil)
	if err != nil {
		t.Fatal(err)
	}
	got := values(t, recs)
	want := []string{
		`restricted {"id":1} {"before":null,"after":{"id":1,"total":"500.01","email":"ann@example.com","note":null}`,
		// HMAC-SHA256("0123456789abcdef0123", "ann@example.com"), computed with openssl:
		// printf 'ann@example.com' | openssl dgst -sha256 -hmac 0123456789abcdef0123
		`shared {"id":1} {"before":null,"after":{"id":1,"total":"500.01","email":"` + hmacHex + `"}`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("records:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, c := range []*change.Change{order(change.Insert, 2, "500.00", "b@x"), order(change.Delete, 1, "900", "a@x")} {
		recs, err := k.Process(context.Background(), c, nil)
		if err != nil || len(recs) != 0 {
			t.Errorf("%v %v: %d records, %v; the filter drops it", c.Op, c.After, len(recs), err)
		}
	}
}

const hmacHex = "517e6ce3489ac9e00f5304776ca8a7ea64b9f9654d952f40f1ec1a877697d431"

func TestFilterRefusesBadRules(t *testing.T) {
	for _, tc := range []struct{ where, want string }{
		{"after.total >", "unexpected"},
		{"", "where is empty"},
		{`op`, "bool"},
	} {
		if _, err := New("filter", NewOptions(map[string]any{"where": tc.where})); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("where %q: err = %v, want it to mention %q", tc.where, err, tc.want)
		}
	}
	// A column the table does not have is named at the table's first change.
	k := build(t, map[string]any{"type": "filter", "where": "after.totl > 5"})
	_, err := k.Process(context.Background(), order(change.Insert, 1, "1", "x"), nil)
	if err == nil || !strings.Contains(err.Error(), "totl") || !strings.Contains(err.Error(), "public.orders") {
		t.Errorf("err = %v, want the unknown column and the table named", err)
	}
}

func TestTransformsRefuseUnknownColumns(t *testing.T) {
	for _, e := range []map[string]any{{"type": "project", "columns": "id,totl"}, {"type": "mask", "columns": "emial"}} {
		k := build(t, e, map[string]any{"type": "json"})
		if _, err := k.Process(context.Background(), order(change.Insert, 1, "1", "x"), nil); err == nil || !strings.Contains(err.Error(), "is not a column of public.orders") {
			t.Errorf("%v: err = %v", e, err)
		}
	}
}

// TestForTables: a scoped step applies to its tables only; the others pass it by.
func TestForTables(t *testing.T) {
	mask, err := New("mask", NewOptions(map[string]any{"columns": "email"}))
	if err != nil {
		t.Fatal(err)
	}
	js, _ := New("json", NewOptions(map[string]any{"topic": "t"}))
	other := *ordersTable
	other.Name = "archive"
	for _, tc := range []struct {
		table *change.Table
		want  string
	}{{ordersTable, `"email":"****"`}, {&other, `"email":"a@x"`}} {
		c := order(change.Insert, 1, "1", "a@x")
		c.Table = tc.table
		recs, err := Chain{ForTables(mask, []string{"public.orders"}), js}.Process(context.Background(), c, nil)
		if err != nil || len(recs) != 1 || !strings.Contains(string(recs[0].Value), tc.want) {
			t.Errorf("%s: %v %v", tc.table.QualifiedName(), err, values(t, recs))
		}
	}
}

// TestTxnAlert: the alert closes a transaction whose changes sum to more than the threshold, exactly
// (decimal), and nothing is written for one at or under it.
func TestTxnAlert(t *testing.T) {
	a, err := New("txn-alert", NewOptions(map[string]any{"sum": "total", "over": 500, "topic": "alerts"}))
	if err != nil {
		t.Fatal(err)
	}
	ch := Chain{ForTables(a, []string{"public.orders"})}
	run := func(id string, totals ...string) []Record {
		t.Helper()
		txn := &change.Txn{ID: id, Position: "0/10", CommitTime: time.UnixMilli(1700000000123)}
		if err := ch.BeginTxn(context.Background(), txn); err != nil {
			t.Fatal(err)
		}
		for i, tot := range totals {
			c := order(change.Insert, int64(i), tot, "x")
			c.Txn = txn
			if recs, err := ch.Process(context.Background(), c, nil); err != nil || len(recs) != 0 {
				t.Fatalf("process: %v %v", recs, err)
			}
		}
		recs, err := ch.CommitTxn(context.Background(), &change.Commit{Txn: txn, End: "0/20", Changes: int64(len(totals))}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return recs
	}
	if recs := run("1", "250.00", "250.00"); len(recs) != 0 {
		t.Errorf("500.00 is not over 500: %q", recs[0].Value)
	}
	recs := run("2", "250.00", "250.01", "0.000000000000000001")
	want := `{"txId":"2","pos":"0/10","end":"0/20","ts_ms":1700000000123,"column":"total","sum":"500.010000000000000001","over":"500","changes":3,"tables":["public.orders"]}`
	if len(recs) != 1 || string(recs[0].Value) != want || string(recs[0].Key) != `"2"` || recs[0].Topic != "alerts" {
		t.Errorf("alert %v\nwant %s", values(t, recs), want)
	}
}
