package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cdcd-dev/cdcd/bookmark"
	"github.com/cdcd-dev/cdcd/tcc"
)

func TestPrintTxn(t *testing.T) {
	bm := bookmark.Consumer{Source: "postgres/db/slot", CommitOffset: 4, Group: 3, Txn: 1, Op: -1, Done: true}
	tx := &tcc.Txn{ID: "731", Position: "0/16B3748", End: "0/16B3778", CommitTime: time.Date(2026, 11, 22, 6, 0, 0, 0, time.UTC),
		Group: 3, Changes: 2, Records: 3, First: true, Last: true, Bookmark: bm,
		Ops: []tcc.Op{
			{Topic: "t", Partition: 0, Offset: 9, Key: []byte(`{"id":1}`), Value: []byte(`{"op":"d"}`)},
			{Topic: "t", Partition: 0, Offset: 10, Key: []byte(`{"id":1}`), Value: nil},
			{Topic: "t", Partition: 1, Offset: 2, Key: []byte("plain"), Value: []byte("not json")},
		}}
	var text bytes.Buffer
	if err := printTxn(&text, tx, false); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"txn 731 at 0/16B3748 committed 2026-11-22T06:00:00Z: 2 changes, 3 records",
		// An Op built by hand has no ID (the tcc gives delivered ones theirs; TestOpID in package tcc).
		` t/0@10 key={"id":1} value=null`, "bookmark v1:4:3:1:-1:0:1:postgres/db/slot"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text output lacks %q:\n%s", want, text.String())
		}
	}
	var js bytes.Buffer
	if err := printTxn(&js, tx, true); err != nil {
		t.Fatal(err)
	}
	var back struct {
		ID  string `json:"id"`
		Ops []struct {
			Key   any `json:"key"`
			Value any `json:"value"`
		} `json:"ops"`
		Bookmark string `json:"bookmark"`
	}
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, js.String())
	}
	if back.ID != "731" || len(back.Ops) != 3 || back.Ops[1].Value != nil || back.Ops[2].Value != "not json" || back.Bookmark != bm.String() {
		t.Errorf("JSON output: %s", js.String())
	}
	tx.First, tx.Last = false, false
	text.Reset()
	_ = printTxn(&text, tx, false)
	if !strings.Contains(text.String(), "(continued)") {
		t.Errorf("a middle chunk is not marked: %s", text.String())
	}
}
