package tcc

import (
	"strconv"
	"testing"
	"unsafe"

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
		r.readHeaders()
		if !r.valid {
			return
		}
		opText := strconv.FormatInt(r.op, 10)
		if r.sub > 0 {
			opText += "." + strconv.Itoa(r.sub)
		}
		if string(r.txnID()) != txn || string(r.pos()) != pos || opText != op || strconv.FormatUint(r.group, 10) != group || r.op < 0 || r.sub < 0 || r.group == 0 {
			t.Fatalf("headers %q %q %q %q read as %+v", txn, pos, op, group, r)
		}
	})
}

// TestHeaderKeysShareTheConstants: reading a record's ordering headers leaves their keys spelled as
// before but sharing the package's constants, so that the strings decoded for them can be
// collected; other headers are left as they are.
func TestHeaderKeysShareTheConstants(t *testing.T) {
	decoded := func(s string) string { return string([]byte(s)) } // a string of its own, as Kafka's decoder makes
	r := rec{headers: []Header{{Key: decoded("table"), Value: []byte("t")}, {Key: decoded(bookmark.HeaderTxn), Value: []byte("731")},
		{Key: decoded(bookmark.HeaderPos), Value: []byte("0/16B3748")}, {Key: decoded(bookmark.HeaderOp), Value: []byte("7")},
		{Key: decoded(bookmark.HeaderGroup), Value: []byte("3")}, {Key: decoded(bookmark.HeaderCount), Value: []byte("8")}}}
	foreign := unsafe.StringData(r.headers[0].Key)
	r.readHeaders()
	if !r.valid || string(r.txnID()) != "731" || string(r.pos()) != "0/16B3748" {
		t.Fatalf("read as %+v", r)
	}
	for i, want := range []string{"table", bookmark.HeaderTxn, bookmark.HeaderPos, bookmark.HeaderOp, bookmark.HeaderGroup, bookmark.HeaderCount} {
		if r.headers[i].Key != want {
			t.Errorf("header %d is %q now, was %q", i, r.headers[i].Key, want)
		}
		if i > 0 && unsafe.StringData(r.headers[i].Key) != unsafe.StringData(want) {
			t.Errorf("header %d (%s) still has its own string", i, want)
		}
	}
	if unsafe.StringData(r.headers[0].Key) != foreign {
		t.Error("a header that is not cdcd's was replaced")
	}
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

// TestQueueSegments: a queue hands out its segments' records in order, lets a segment go once
// its last record is popped (a segment kept would keep its whole fetch response alive), and marks
// a segment's first record as of the same transaction as the last one queued before it only
// while that one is still queued.
func TestQueueSegments(t *testing.T) {
	mk := func(first int64, txns ...string) []rec {
		seg := make([]rec, len(txns))
		for i, txn := range txns {
			seg[i] = rec{offset: first + int64(i), headers: []Header{{Key: bookmark.HeaderTxn, Value: []byte(txn)},
				{Key: bookmark.HeaderPos, Value: []byte("0/" + txn)}, {Key: bookmark.HeaderOp, Value: []byte(strconv.Itoa(i))},
				{Key: bookmark.HeaderGroup, Value: []byte("1")}}}
		}
		readSegment(seg)
		return seg
	}
	var q queue
	q.add(mk(0, "a", "a", "b"), nil)
	q.add(mk(3, "b", "c"), nil)
	q.add(nil, nil)
	if q.len() != 5 {
		t.Fatalf("queue of 5 records has length %d", q.len())
	}
	wantSame := []bool{false, true, false, true, false}
	segs := q.segs // the queue's array of segments, as it is now
	for i := range 3 {
		h := q.peek()
		if h.offset != int64(i) || h.sameTxn != wantSame[i] {
			t.Fatalf("record %d: offset %d, sameTxn %v", i, h.offset, h.sameTxn)
		}
		q.pop()
	}
	if segs[0] != nil {
		t.Fatal("the consumed segment is still referenced by the queue's array")
	}
	for i := 3; i < 5; i++ {
		if h := q.peek(); h.offset != int64(i) || h.sameTxn != wantSame[i] {
			t.Fatalf("record %d: offset %d, sameTxn %v", i, h.offset, h.sameTxn)
		}
		q.pop()
	}
	if q.len() != 0 || q.peek() != nil {
		t.Fatalf("the drained queue has length %d", q.len())
	}
	// The last record queued was popped: the next segment's first record is not compared with it.
	q.add(mk(5, "c"), nil)
	if q.peek().sameTxn {
		t.Fatal("a record added to an empty queue was compared with one already popped")
	}

	// A consumed segment given back to its pool keeps nothing of its records.
	var pool segmentPool
	seg := pool.get(3)
	copy(seg, mk(6, "d", "d", "d"))
	q.add(seg, &pool)
	for q.len() > 0 {
		q.pop()
	}
	for i, r := range seg[:cap(seg)] {
		if r.value != nil || r.headers != nil {
			t.Fatalf("slot %d of a segment given back still holds offset %d", i, r.offset)
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

// TestOpID: an Op's ID is opID's spelling; an Op the tcc did not deliver has none.
func TestOpID(t *testing.T) {
	txn := &opTxn{pos: "0/16B3748"}
	for _, op := range []Op{{Index: 0}, {Index: 7}, {Index: 7, Rec: 1}, {Index: 7, Rec: 12}, {Index: 9223372036854775807, Rec: 1<<31 - 1}} {
		op.txn = txn
		if want := opID("0/16B3748", op.Index, op.Rec); op.ID() != want {
			t.Errorf("op %d.%d has ID %q, want %q", op.Index, op.Rec, op.ID(), want)
		}
	}
	if id := (Op{Index: 3}).ID(); id != "" {
		t.Errorf("an Op the tcc did not deliver has ID %q", id)
	}
}
