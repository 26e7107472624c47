package bookmark

import (
	"errors"
	"testing"
)

func TestConsumerForms(t *testing.T) {
	for _, b := range []Consumer{
		{Source: "postgres/db/slot", CommitOffset: 0, Group: 1, Txn: 0, Op: -1, Done: true},
		{Source: "a:b", CommitOffset: 12345, Group: 99, Txn: 3, Op: 1_000_000, Rec: 2},
	} {
		got, err := ParseConsumer(b.String())
		if err != nil || got != b {
			t.Errorf("text %q -> %+v, %v", b.String(), got, err)
		}
		bin, _ := b.MarshalBinary()
		var back Consumer
		if err := back.UnmarshalBinary(bin); err != nil || back != b {
			t.Errorf("binary -> %+v, %v", back, err)
		}
	}
	for _, bad := range []string{"", "v2:1:1:0:0:0:0:s", "v1:1:0:0:0:0:0:s", "v1:1:1:0:0:0:0:", "v1:x:1:0:0:0:0:s", "v1:1:1:0:-2:0:0:s", "garbage"} {
		if _, err := ParseConsumer(bad); !errors.Is(err, ErrBadBookmark) {
			t.Errorf("ParseConsumer(%q) = %v", bad, err)
		}
	}
}

func TestConsumerCompare(t *testing.T) {
	order := []Consumer{
		{Group: 1, Txn: 0, Op: 0},
		{Group: 1, Txn: 0, Op: 0, Rec: 1},
		{Group: 1, Txn: 0, Op: 5},
		{Group: 1, Txn: 0, Op: -1, Done: true},
		{Group: 1, Txn: 1, Op: 0},
		{Group: 2, Txn: 0, Op: 0},
	}
	for i := range order {
		for j := range order {
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got := order[i].Compare(order[j]); got != want {
				t.Errorf("%+v vs %+v = %d, want %d", order[i], order[j], got, want)
			}
		}
	}
}

func FuzzParseConsumer(f *testing.F) {
	f.Add("v1:12:3:0:4:0:0:postgres/db/slot")
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseConsumer(s)
		if err != nil {
			return
		}
		again, err := ParseConsumer(b.String())
		if err != nil || again != b {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, b, b.String(), again, err)
		}
		bin, _ := b.MarshalBinary()
		var back Consumer
		if err := back.UnmarshalBinary(bin); err != nil || back != b {
			t.Fatalf("binary round trip of %+v: %+v, %v", b, back, err)
		}
	})
}

// FuzzConsumerBinary: any bytes either fail to unmarshal or come back unchanged through
// MarshalBinary; never a panic.
func FuzzConsumerBinary(f *testing.F) {
	for _, b := range []Consumer{{Source: "postgres/1/db/slot", CommitOffset: 8, Group: 4, Txn: 2, Op: 7, Rec: 1}, {Source: "s", Group: 1, Op: -1, Done: true}} {
		data, _ := b.MarshalBinary()
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var b Consumer
		if err := b.UnmarshalBinary(data); err != nil {
			return
		}
		again, err := b.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var c Consumer
		if err := c.UnmarshalBinary(again); err != nil || c != b {
			t.Fatalf("%+v came back as %+v (%v)", b, c, err)
		}
	})
}

// FuzzParseCommitRecord: any bytes either fail to parse or describe a record that survives a round
// trip; never a panic.
func FuzzParseCommitRecord(f *testing.F) {
	rec := CommitRecord{Version: CommitVersion, Source: "postgres/1/db/slot", Group: 3, Resume: "0/10", Lineage: "1",
		Txns: []TxnEntry{{ID: "7", Position: "0/8", End: "0/10", Changes: 2, Records: 3}}, Ranges: []Range{{Topic: "t", First: 4, Last: 6, Count: 3}}}
	data, _ := rec.Marshal()
	f.Add(data)
	f.Add([]byte(`{"v":1,"source":"s","group":1}`))
	f.Add([]byte(`{"v":2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseCommitRecord(data)
		if err != nil {
			return
		}
		again, err := c.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		d, err := ParseCommitRecord(again)
		if err != nil {
			t.Fatalf("a parsed record does not parse again: %v", err)
		}
		if d.Group != c.Group || d.Source != c.Source || d.Resume != c.Resume || len(d.Txns) != len(c.Txns) || len(d.Ranges) != len(c.Ranges) {
			t.Fatalf("%+v came back as %+v", c, d)
		}
	})
}
