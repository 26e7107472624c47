package kcop

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/cdcd-dev/cdcd/change"
)

// TestOutboxRouter: an insert into the outbox table becomes an event by Debezium's conventions,
// the router claims every change of its table (the formatter after it never sees one), and the
// other tables pass through to that formatter.
func TestOutboxRouter(t *testing.T) {
	router, err := New("outbox", NewOptions(map[string]any{"table": "public.outbox"}))
	if err != nil {
		t.Fatal(err)
	}
	js, err := New("json", NewOptions(map[string]any{"topic": "cdc.{table}"}))
	if err != nil {
		t.Fatal(err)
	}
	chain := Chain{router, js}
	outbox := &change.Table{Schema: "public", Name: "outbox", Columns: []change.Column{{Name: "id", Type: "uuid", Key: true},
		{Name: "aggregatetype", Type: "text"}, {Name: "aggregateid", Type: "text"}, {Name: "type", Type: "text"}, {Name: "payload", Type: "jsonb"}}, KeyIndexes: []int{0}}
	orders := &change.Table{Schema: "public", Name: "orders", Columns: []change.Column{{Name: "id", Type: "int4", Key: true}}, KeyIndexes: []int{0}}
	txn := &change.Txn{ID: "9"}
	event := change.Row{{V: change.Text("4d47e190-0402-4048-bc2c-89dd54343cdc")}, {V: "Order/EU"}, {V: "1"}, {V: "OrderCreated"}, {V: change.JSON(`{"id": 1, "total": 39.98}`)}}
	ctx := context.Background()
	recs, err := chain.Process(ctx, &change.Change{Op: change.Insert, Table: outbox, Txn: txn, After: event}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []Record{{Topic: "outbox.event.Order_EU", Partition: PartitionByKey, Key: []byte("1"), Value: []byte(`{"id": 1, "total": 39.98}`),
		Headers: []Header{{Key: "id", Value: []byte("4d47e190-0402-4048-bc2c-89dd54343cdc")}, {Key: "type", Value: []byte("OrderCreated")}}}}
	if !reflect.DeepEqual(recs, want) {
		t.Errorf("the event:\n got  %+v\n want %+v", recs, want)
	}
	for _, c := range []*change.Change{
		{Op: change.Delete, Table: outbox, Txn: txn, Before: change.Row{{V: change.Text("4d47e190")}, {Kind: change.Absent}, {Kind: change.Absent}, {Kind: change.Absent}, {Kind: change.Absent}}},
		{Op: change.Update, Table: outbox, Txn: txn, After: event},
		{Op: change.Read, Table: outbox, Txn: txn, After: event},
		{Op: change.Truncate, Table: outbox, Txn: txn},
	} {
		if recs, err := chain.Process(ctx, c, nil); err != nil || len(recs) != 0 {
			t.Errorf("%v of the outbox table: %v, %v; want nothing", c.Op, recs, err)
		}
	}
	recs, err = chain.Process(ctx, &change.Change{Op: change.Insert, Table: orders, Txn: txn, After: change.Row{{V: int64(1)}}}, nil)
	if err != nil || len(recs) != 1 || recs[0].Topic != "cdc.orders" {
		t.Errorf("an order: %v, %v", recs, err)
	}
	// A NULL payload is a tombstone; a NULL aggregate id is an error naming the column.
	nullPayload := append(change.Row(nil), event...)
	nullPayload[4] = change.Value{Kind: change.Null}
	if recs, err := chain.Process(ctx, &change.Change{Op: change.Insert, Table: outbox, Txn: txn, After: nullPayload}, nil); err != nil || len(recs) != 1 || recs[0].Value != nil {
		t.Errorf("a NULL payload: %v, %v", recs, err)
	}
	nullID := append(change.Row(nil), event...)
	nullID[2] = change.Value{Kind: change.Null}
	if _, err := chain.Process(ctx, &change.Change{Op: change.Insert, Table: outbox, Txn: txn, After: nullID}, nil); err == nil || !strings.Contains(err.Error(), "column aggregateid") {
		t.Errorf("a NULL aggregate id: err = %v", err)
	}
	// Bad options and a table without the columns are named.
	if _, err := New("outbox", NewOptions(map[string]any{"table": "outbox"})); err == nil || !strings.Contains(err.Error(), "schema.table") {
		t.Errorf("an unqualified table: err = %v", err)
	}
	other, _ := New("outbox", NewOptions(map[string]any{"table": "public.orders"}))
	if _, err := other.Process(ctx, &change.Change{Op: change.Insert, Table: orders, Txn: txn, After: change.Row{{V: int64(1)}}}, nil); err == nil ||
		!strings.Contains(err.Error(), "public.orders has no column aggregatetype") {
		t.Errorf("a table without the outbox columns: err = %v", err)
	}
}
