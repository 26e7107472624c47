package bookmark

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Consumer is a position in a commit stream's history, as the tcc hands it out with every
// transaction and every operation: everything up to and including operation Op (record Rec of it)
// of the Txn-th transaction of commit group Group has been delivered. A transaction's bookmark has
// Op = -1 and Done set: the whole transaction was delivered. Starting from a bookmark continues with
// what follows it, none skipped, none repeated.
type Consumer struct {
	// Source is the commit stream's source (CommitRecord.Source); a bookmark fits one stream only.
	Source string
	// CommitOffset is the offset of the group's record on the commit topic.
	CommitOffset int64
	Group        uint64
	// Txn is the transaction's index within its group.
	Txn int
	// Op and Rec locate the last delivered record within the transaction (Rec: the record's index
	// among those of its operation).
	Op  int64
	Rec int
	// Done means the whole transaction was delivered.
	Done bool
}

// consumerVersion is the version of the text and binary forms.
const consumerVersion = 1

// Compare orders bookmarks of one commit stream: -1 if b is before o, 0 if equal, +1 if after.
func (b Consumer) Compare(o Consumer) int {
	if c := cmp.Compare(b.Group, o.Group); c != 0 {
		return c
	}
	if c := cmp.Compare(b.Txn, o.Txn); c != 0 {
		return c
	}
	// Done is past every operation of the transaction.
	if b.Done != o.Done {
		if b.Done {
			return 1
		}
		return -1
	}
	if c := cmp.Compare(b.Op, o.Op); c != 0 {
		return c
	}
	return cmp.Compare(b.Rec, o.Rec)
}

// String is the text form: "v1:<commit offset>:<group>:<txn>:<op>:<rec>:<done 0|1>:<source>".
func (b Consumer) String() string {
	done := 0
	if b.Done {
		done = 1
	}
	return fmt.Sprintf("v%d:%d:%d:%d:%d:%d:%d:%s", consumerVersion, b.CommitOffset, b.Group, b.Txn, b.Op, b.Rec, done, b.Source)
}

// ErrBadBookmark is wrapped by every parsing error.
var ErrBadBookmark = errors.New("not a cdcd consumer bookmark")

// ParseConsumer reads the text form.
func ParseConsumer(s string) (Consumer, error) {
	parts := strings.SplitN(s, ":", 8)
	if len(parts) != 8 || parts[0] != "v1" {
		return Consumer{}, fmt.Errorf("%w: %q (want v1:<commit offset>:<group>:<txn>:<op>:<rec>:<done>:<source>)", ErrBadBookmark, s)
	}
	var b Consumer
	var err error
	num := func(i int) int64 {
		if err != nil {
			return 0
		}
		var v int64
		v, err = strconv.ParseInt(parts[i], 10, 64)
		return v
	}
	b.CommitOffset = num(1)
	g := num(2)
	b.Txn = int(num(3))
	b.Op = num(4)
	b.Rec = int(num(5))
	done := num(6)
	b.Source = parts[7]
	if err != nil || g <= 0 || b.CommitOffset < 0 || b.Txn < 0 || b.Op < -1 || b.Rec < 0 || done > 1 || done < 0 || b.Source == "" {
		return Consumer{}, fmt.Errorf("%w: %q has a field out of range", ErrBadBookmark, s)
	}
	b.Group, b.Done = uint64(g), done == 1
	return b, nil
}

// MarshalText implements encoding.TextMarshaler.
func (b Consumer) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (b *Consumer) UnmarshalText(t []byte) error {
	v, err := ParseConsumer(string(t))
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// MarshalBinary is a compact form: a version byte, then varints, then the source.
func (b Consumer) MarshalBinary() ([]byte, error) {
	out := []byte{consumerVersion}
	out = binary.AppendVarint(out, b.CommitOffset)
	out = binary.AppendUvarint(out, b.Group)
	out = binary.AppendVarint(out, int64(b.Txn))
	out = binary.AppendVarint(out, b.Op)
	out = binary.AppendVarint(out, int64(b.Rec))
	if b.Done {
		out = append(out, 1)
	} else {
		out = append(out, 0)
	}
	return append(out, b.Source...), nil
}

// UnmarshalBinary reads MarshalBinary's form.
func (b *Consumer) UnmarshalBinary(data []byte) error {
	if len(data) == 0 || data[0] != consumerVersion {
		return fmt.Errorf("%w: unknown binary version", ErrBadBookmark)
	}
	rest := data[1:]
	var v Consumer
	vals := make([]int64, 5)
	for i := range vals {
		var n int
		if i == 1 {
			var u uint64
			u, n = binary.Uvarint(rest)
			vals[i] = int64(u)
		} else {
			vals[i], n = binary.Varint(rest)
		}
		if n <= 0 {
			return fmt.Errorf("%w: truncated binary form", ErrBadBookmark)
		}
		rest = rest[n:]
	}
	if len(rest) < 2 || rest[0] > 1 {
		return fmt.Errorf("%w: truncated binary form", ErrBadBookmark)
	}
	v.CommitOffset, v.Group, v.Txn, v.Op, v.Rec = vals[0], uint64(vals[1]), int(vals[2]), vals[3], int(vals[4])
	v.Done, v.Source = rest[0] == 1, string(rest[1:])
	if v.Group == 0 || v.CommitOffset < 0 || v.Txn < 0 || v.Op < -1 || v.Rec < 0 {
		return fmt.Errorf("%w: a field is out of range", ErrBadBookmark)
	}
	*b = v
	return nil
}
