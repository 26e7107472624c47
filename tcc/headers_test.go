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
		r := rec{headers: []Header{{Key: bookmark.HeaderTxn, Value: []byte(txn)}, {Key: bookmark.HeaderPos, Value: []byte(pos)},
			{Key: bookmark.HeaderOp, Value: []byte(op)}, {Key: bookmark.HeaderGroup, Value: []byte(group)}}}
		r.readHeaders(nil)
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
		// The next record of the same transaction takes the strings of the one before it.
		next := rec{headers: r.headers}
		next.readHeaders(&r)
		if next.txnID != r.txnID || next.pos != r.pos || next.op != r.op || next.sub != r.sub || next.group != r.group || !next.valid {
			t.Fatalf("the same headers after %+v read as %+v", r, next)
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
		{"+7", 0, 0, false}, {"-1", 0, 0, false}, {"7.", 0, 0, false}, {".1", 0, 0, false}, {"7.01", 0, 0, false}, {"", 0, 0, false},
		{"9223372036854775807", 9223372036854775807, 0, true}, {"9223372036854775808", 0, 0, false}, {"1.2147483647", 1, 2147483647, true},
		{"1.2147483648", 0, 0, false}, {"1.2.3", 0, 0, false}, {"1 ", 0, 0, false}} {
		op, sub, ok := parseOp([]byte(tc.in))
		if ok != tc.ok || op != tc.op || sub != tc.sub {
			t.Errorf("parseOp(%q) = %d, %d, %v", tc.in, op, sub, ok)
		}
	}
}

// TestQueueCompactionReleasesRecords: when a queue moves its records to the front of its array, the
// slots it leaves hold nothing: a record there would keep its whole fetch response alive.
func TestQueueCompactionReleasesRecords(t *testing.T) {
	var q queue
	for i := range 3000 {
		q.recs = append(q.recs, rec{offset: int64(i), value: make([]byte, 1)})
	}
	for range 2000 {
		q.pop()
	}
	if len(q.recs) == 3000 {
		t.Fatal("the queue did not compact")
	}
	all := q.recs[:cap(q.recs)]
	for i := len(q.recs); i < len(all); i++ {
		if all[i].value != nil {
			t.Fatalf("slot %d beyond the queue's %d records still holds offset %d", i, len(q.recs), all[i].offset)
		}
	}
	if q.len() != 1000 || q.peek().offset != 2000 {
		t.Fatalf("after compaction the queue holds %d records from offset %d", q.len(), q.peek().offset)
	}
	for range 1000 {
		q.pop()
	}
	for i, r := range q.recs[:cap(q.recs)] {
		if r.value != nil {
			t.Fatalf("the drained queue's slot %d still holds offset %d", i, r.offset)
		}
	}
}

// opID is an operation's ID as Op.ID documents it, spelled out plainly.
func opID(pos string, index int64, rec int) string {
	id := pos + "/" + strconv.FormatInt(index, 10)
	if rec > 0 {
		id += "." + strconv.Itoa(rec)
	}
	return id
}

// TestSetIDs: the IDs cut from one string per chunk are opID's.
func TestSetIDs(t *testing.T) {
	ops := []Op{{Index: 0}, {Index: 7}, {Index: 7, Rec: 1}, {Index: 7, Rec: 12}, {Index: 9223372036854775807}}
	setIDs("0/16B3748", ops)
	for _, op := range ops {
		if want := opID("0/16B3748", op.Index, op.Rec); op.ID != want {
			t.Errorf("op %d.%d has ID %q, want %q", op.Index, op.Rec, op.ID, want)
		}
	}
}
