package kcop

import (
	"context"
	"encoding/json"
	"math"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cdcd-dev/cdcd/change"
)

var auditTable = &change.Table{Database: "shop", Schema: "public", Name: "people",
	Columns:    []change.Column{{Name: "id", Key: true}, {Name: "name"}, {Name: "bio"}, {Name: "score"}, {Name: "photo"}, {Name: "seen"}},
	KeyIndexes: []int{0}}

var auditTxn = &change.Txn{ID: "771", Position: "0/16B3748", CommitTime: time.Date(2026, 11, 30, 9, 8, 7, 654321000, time.FixedZone("x", 3600))}

// The expected lines were written by hand from the format's definition: op, commit time (UTC, ms),
// user (\N), transaction id, then the before image and the after image, one field per column.
var csvCases = []struct {
	name   string
	change *change.Change
	want   string
	fields []string // what an RFC 4180 reader must read back
}{
	{"insert with quoting", &change.Change{Op: change.Insert, Table: auditTable, Txn: auditTxn,
		After: change.Row{{V: int64(1)}, {V: `O'Neil, "Bob"`}, {V: "line one\nline two"}, {V: change.Decimal("12.5000")}, {V: []byte{0xca, 0xfe}}, {V: time.Date(2026, 1, 2, 3, 4, 5, 600000000, time.UTC)}}},
		`c,2026-11-30T08:08:07.654Z,\N,771,\N,\N,\N,\N,\N,\N,1,"O'Neil, ""Bob""","line one` + "\n" + `line two",12.5000,cafe,2026-01-02T03:04:05.6Z`,
		[]string{"c", "2026-11-30T08:08:07.654Z", `\N`, "771", `\N`, `\N`, `\N`, `\N`, `\N`, `\N`, "1", `O'Neil, "Bob"`, "line one\nline two", "12.5000", "cafe", "2026-01-02T03:04:05.6Z"}},
	{"update with an unsent value and a NULL", &change.Change{Op: change.Update, Table: auditTable, Txn: auditTxn,
		Before: change.Row{{V: int64(1)}, {V: "Bob"}, {Kind: change.Unchanged}, {V: change.Decimal("1.0")}, {Kind: change.Null}, {Kind: change.Null}},
		After:  change.Row{{V: int64(1)}, {V: "Bob"}, {Kind: change.Unchanged}, {V: change.Decimal("2.0")}, {Kind: change.Null}, {V: math.Inf(-1)}}},
		`u,2026-11-30T08:08:07.654Z,\N,771,1,Bob,\U,1.0,\N,\N,1,Bob,\U,2.0,\N,-Infinity`,
		[]string{"u", "2026-11-30T08:08:07.654Z", `\N`, "771", "1", "Bob", `\U`, "1.0", `\N`, `\N`, "1", "Bob", `\U`, "2.0", `\N`, "-Infinity"}},
	{"delete with a key-only before image", &change.Change{Op: change.Delete, Table: auditTable, Txn: auditTxn,
		Before: change.Row{{V: int64(2)}, {Kind: change.Absent}, {Kind: change.Absent}, {Kind: change.Absent}, {Kind: change.Absent}, {Kind: change.Absent}}},
		`d,2026-11-30T08:08:07.654Z,\N,771,2,\U,\U,\U,\U,\U,\N,\N,\N,\N,\N,\N`,
		[]string{"d", "2026-11-30T08:08:07.654Z", `\N`, "771", "2", `\U`, `\U`, `\U`, `\U`, `\U`, `\N`, `\N`, `\N`, `\N`, `\N`, `\N`}},
	{"snapshot row without a commit time, leading space and empty text", &change.Change{Op: change.Read, Table: auditTable, Txn: &change.Txn{ID: "snapshot", Snapshot: true},
		After: change.Row{{V: uint64(18446744073709551615)}, {V: " padded"}, {V: ""}, {V: float32(0.1)}, {V: []byte{}}, {V: change.Timestamp("2026-01-02T03:04:05")}}},
		`r,,\N,snapshot,\N,\N,\N,\N,\N,\N,18446744073709551615," padded",,0.1,,2026-01-02T03:04:05`,
		[]string{"r", "", `\N`, "snapshot", `\N`, `\N`, `\N`, `\N`, `\N`, `\N`, "18446744073709551615", " padded", "", "0.1", "", "2026-01-02T03:04:05"}},
}

func TestCSVAudit(t *testing.T) {
	k, err := NewCSVAudit(NewOptions(map[string]any{"topic": "audit.{table}"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range csvCases {
		recs, err := k.Process(context.Background(), tc.change, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if len(recs) != 1 || recs[0].Topic != "audit.people" || string(recs[0].Value) != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, recs[0].Value, tc.want)
		}
	}
}

// TestCSVAuditReadByPython: Python's csv module, a reader cdcd did not write, reads each line back
// into exactly the fields the format defines.
func TestCSVAuditReadByPython(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed")
	}
	k, err := NewCSVAudit(NewOptions(map[string]any{"delimiter": ";"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range csvCases {
		recs, err := k.Process(context.Background(), tc.change, nil)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(py, "-c", "import csv, json, sys; print(json.dumps(next(csv.reader(sys.stdin, delimiter=';'))))")
		cmd.Stdin = strings.NewReader(string(recs[0].Value))
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: python: %v", tc.name, err)
		}
		var got []string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("%s: %v: %s", tc.name, err, out)
		}
		if strings.Join(got, "|") != strings.Join(tc.fields, "|") || len(got) != len(tc.fields) {
			t.Errorf("%s: python read %q\nwant %q", tc.name, got, tc.fields)
		}
	}
}

func TestCSVAuditOptions(t *testing.T) {
	for _, tc := range []struct {
		opts map[string]any
		want string
	}{
		{map[string]any{"delimiter": ";;"}, "one character"},
		{map[string]any{"delimiter": `"`}, "one character"},
		{map[string]any{"null": "X", "unsent": "X"}, "could not tell"},
		{map[string]any{"quoting": "all"}, "unknown option(s) quoting"},
	} {
		if _, err := NewCSVAudit(NewOptions(tc.opts)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.opts, err, tc.want)
		}
	}
}

// TestJSONAudit: the expected objects were written by hand from the format's definition, and each is
// checked to be valid JSON.
func TestJSONAudit(t *testing.T) {
	k, err := NewJSONAudit(NewOptions(map[string]any{"topic": "audit.{table}"}))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`{"AUD_OP":"c","AUD_TS":"2026-11-30T08:08:07.654Z","AUD_TXID":"771","AUD_POS":"0/16B3748","AUD_TABLE":"public.people","AUD_OP_INDEX":0,"id":1,"name":"O'Neil, \"Bob\"","bio":"line one\nline two","score":"12.5000","photo":"yv4=","seen":"2026-01-02T03:04:05.6Z"}`,
		`{"AUD_OP":"u","AUD_TS":"2026-11-30T08:08:07.654Z","AUD_TXID":"771","AUD_POS":"0/16B3748","AUD_TABLE":"public.people","AUD_OP_INDEX":0,"id":1,"name":"Bob","score":"2.0","photo":null,"seen":"-Infinity","B_id":1,"B_name":"Bob","B_score":"1.0","B_photo":null,"B_seen":null,"AUD_UNSENT":["bio","B_bio"]}`,
		`{"AUD_OP":"d","AUD_TS":"2026-11-30T08:08:07.654Z","AUD_TXID":"771","AUD_POS":"0/16B3748","AUD_TABLE":"public.people","AUD_OP_INDEX":0,"B_id":2,"AUD_UNSENT":["B_name","B_bio","B_score","B_photo","B_seen"]}`,
		`{"AUD_OP":"r","AUD_TS":null,"AUD_TXID":"snapshot","AUD_POS":"","AUD_TABLE":"public.people","AUD_OP_INDEX":0,"id":18446744073709551615,"name":" padded","bio":"","score":0.1,"photo":"","seen":"2026-01-02T03:04:05"}`,
	}
	for i, tc := range csvCases {
		recs, err := k.Process(context.Background(), tc.change, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !json.Valid(recs[0].Value) {
			t.Errorf("%s: not JSON: %s", tc.name, recs[0].Value)
		}
		if string(recs[0].Value) != want[i] {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, recs[0].Value, want[i])
		}
	}
}
