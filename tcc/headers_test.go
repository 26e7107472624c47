package tcc

import (
	"strconv"
	"testing"

	"github.com/cdcd-dev/cdcd/bookmark"
)

// FuzzOrderingHeaders: any header values give a record that is either valid, with fields that
// render back to exactly the values given (as the writer spells them), or invalid; never a panic.
func FuzzOrderingHeaders(f *testing.F) {
	f.Add("731", "0/16B3748", "7", "3")
	f.Add("731", "0/16B3748", "7.2", "12")
	f.Add("x", "", "07", "+3")
	f.Add("1", "0/1", "-1", "0")
	f.Fuzz(func(t *testing.T, txn, pos, op, group string) {
		r := rec{headers: []Header{{bookmark.HeaderTxn, []byte(txn)}, {bookmark.HeaderPos, []byte(pos)},
			{bookmark.HeaderOp, []byte(op)}, {bookmark.HeaderGroup, []byte(group)}}}
		r.readHeaders()
		if !r.valid {
			return
		}
		opText := strconv.FormatInt(r.op, 10)
		if r.sub > 0 {
			opText += "." + strconv.Itoa(r.sub)
		}
		if r.txnID != txn || r.pos != pos || opText != op || strconv.FormatUint(r.group, 10) != group || r.op < 0 || r.sub < 0 || r.group == 0 {
			t.Fatalf("headers %q %q %q %q read as %+v", txn, pos, op, group, r)
		}
	})
}

func TestParseOp(t *testing.T) {
	for _, tc := range []struct {
		in  string
		op  int64
		sub int
		ok  bool
	}{{"0", 0, 0, true}, {"7", 7, 0, true}, {"7.1", 7, 1, true}, {"7.0", 0, 0, false}, {"07", 0, 0, false},
		{"+7", 0, 0, false}, {"-1", 0, 0, false}, {"7.", 0, 0, false}, {".1", 0, 0, false}, {"7.01", 0, 0, false}, {"", 0, 0, false}} {
		op, sub, ok := parseOp(tc.in)
		if ok != tc.ok || op != tc.op || sub != tc.sub {
			t.Errorf("parseOp(%q) = %d, %d, %v", tc.in, op, sub, ok)
		}
	}
}
