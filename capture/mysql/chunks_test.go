package mysql

import (
	"testing"

	"github.com/cdcd-dev/cdcd/change"
)

func TestCopyStateKeys(t *testing.T) {
	st := copyState{Tables: []tableCopy{{Database: "app", Name: "t", After: []string{`'it\'s'`, `'12'`, `X'00FF'`}, Chunks: 2, Rows: 800}}}
	back, err := parseCopyState(st.encode())
	if err != nil || len(back.Tables) != 1 || back.Tables[0].After[2] != `X'00FF'` || back.Tables[0].Rows != 800 {
		t.Fatalf("round trip: %+v %v", back, err)
	}
	for _, bad := range []string{
		`{"v":1,"tables":[{"database":"a","name":"t","after":["1) OR (1=1"]}]}`,
		`{"v":1,"tables":[{"database":"a","name":"t","after":["'a') OR ('1'"]}]}`,
		`{"v":1,"tables":[{"database":"a","name":"t","after":["X'0G'"]}]}`,
		`{"v":1,"tables":[{"database":"a","name":"t","until":["1; DROP TABLE t"]}]}`,
		`{"v":2,"tables":[]}`,
		`{`,
	} {
		if _, err := parseCopyState(bad); err == nil {
			t.Errorf("parseCopyState(%s) accepted it", bad)
		}
	}
}

// TestKeyOf: a chunk's rows and the binlog's match by key whatever order each lists the key in.
func TestKeyOf(t *testing.T) {
	catalog := &change.Table{KeyIndexes: []int{2, 0}}
	binlog := &change.Table{KeyIndexes: []int{0, 2}}
	row := change.Row{{V: int64(7)}, {V: "x"}, {V: "k"}}
	a, okA := keyOf(catalog, row)
	b, okB := keyOf(binlog, row)
	if !okA || !okB || a != b {
		t.Errorf("keys differ: %q %q", a, b)
	}
	if _, ok := keyOf(binlog, change.Row{{Kind: change.Null}, {V: "x"}, {V: "k"}}); ok {
		t.Error("a key with a missing value matched")
	}
}
