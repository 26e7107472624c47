package postgres

import (
	"encoding/binary"
	"fmt"

	"github.com/jackc/pglogrepl"
)

// tupleReader reads pgoutput's Insert, Update and Delete messages into pglogrepl's message types
// without copying a value or allocating per column: a column's data is a view of the message's
// bytes, and the messages, tuples and columns are reused from one message to the next. What it
// returns is valid until its next call and until the message's buffer is reused; decodeTuple
// copies what it keeps.
type tupleReader struct {
	cols   []pglogrepl.TupleDataColumn
	ptrs   []*pglogrepl.TupleDataColumn
	tuples [2]pglogrepl.TupleData
	insert pglogrepl.InsertMessage
	update pglogrepl.UpdateMessage
	remove pglogrepl.DeleteMessage
}

// read decodes data, an 'I', 'U' or 'D' message. It checks every length against the message as it
// goes, so that the message is walked once, and refuses bytes after the last tuple.
func (tr *tupleReader) read(data []byte) (pglogrepl.Message, error) {
	if len(data) < 6 {
		return nil, fmt.Errorf("a %q message of %d bytes", data[0], len(data))
	}
	tr.cols, tr.ptrs = tr.cols[:0], tr.ptrs[:0]
	relation := binary.BigEndian.Uint32(data[1:])
	p := 5
	var spans [2][2]int // each tuple's columns in tr.cols
	readTuple := func(i int) error {
		if p+2 > len(data) {
			return fmt.Errorf("a %q message ends before its tuple", data[0])
		}
		n := int(binary.BigEndian.Uint16(data[p:]))
		p += 2
		spans[i][0] = len(tr.cols)
		for range n {
			if p >= len(data) {
				return fmt.Errorf("a %q message ends inside its tuple", data[0])
			}
			c := pglogrepl.TupleDataColumn{DataType: data[p]}
			p++
			if c.DataType == pglogrepl.TupleDataTypeText || c.DataType == pglogrepl.TupleDataTypeBinary {
				if p+4 > len(data) {
					return fmt.Errorf("a %q message ends inside a column's length", data[0])
				}
				c.Length = binary.BigEndian.Uint32(data[p:])
				p += 4
				if int64(c.Length) > int64(len(data)-p) {
					return fmt.Errorf("a column of %d bytes in the %d that remain of a %q message", c.Length, len(data)-p, data[0])
				}
				c.Data = data[p : p+int(c.Length) : p+int(c.Length)]
				p += int(c.Length)
			}
			tr.cols = append(tr.cols, c)
		}
		spans[i][1] = len(tr.cols)
		return nil
	}
	// tuple points tuple i at its columns, once every column is in place (appending may move them).
	tuple := func(i int) *pglogrepl.TupleData {
		t := &tr.tuples[i]
		first := len(tr.ptrs)
		for j := spans[i][0]; j < spans[i][1]; j++ {
			tr.ptrs = append(tr.ptrs, &tr.cols[j])
		}
		t.ColumnNum, t.Columns = uint16(spans[i][1]-spans[i][0]), tr.ptrs[first:len(tr.ptrs):len(tr.ptrs)]
		return t
	}
	marker := data[p]
	p++
	switch data[0] {
	case 'I':
		if marker != 'N' {
			return nil, fmt.Errorf("an insert's tuple is marked %q, not N", marker)
		}
		if err := readTuple(0); err != nil {
			return nil, err
		}
		tr.insert = pglogrepl.InsertMessage{RelationID: relation, Tuple: tuple(0)}
		return whole(data, p, &tr.insert)
	case 'U':
		tr.update = pglogrepl.UpdateMessage{RelationID: relation}
		if marker == 'K' || marker == 'O' {
			if err := readTuple(1); err != nil {
				return nil, err
			}
			if p >= len(data) || data[p] != 'N' {
				return nil, fmt.Errorf("an update's old tuple is not followed by its new one")
			}
			p++
			tr.update.OldTupleType = marker
		} else if marker != 'N' {
			return nil, fmt.Errorf("an update's tuple is marked %q, not K, O or N", marker)
		}
		if err := readTuple(0); err != nil {
			return nil, err
		}
		tr.update.NewTuple = tuple(0)
		if tr.update.OldTupleType != 0 {
			tr.update.OldTuple = tuple(1)
		}
		return whole(data, p, &tr.update)
	case 'D':
		if marker != 'K' && marker != 'O' {
			return nil, fmt.Errorf("a delete's tuple is marked %q, not K or O", marker)
		}
		if err := readTuple(0); err != nil {
			return nil, err
		}
		tr.remove = pglogrepl.DeleteMessage{RelationID: relation, OldTupleType: marker, OldTuple: tuple(0)}
		return whole(data, p, &tr.remove)
	}
	return nil, fmt.Errorf("%q is not a row message", data[0])
}

// whole returns m, read from data up to p, if nothing follows its tuples.
func whole(data []byte, p int, m pglogrepl.Message) (pglogrepl.Message, error) {
	if p != len(data) {
		return nil, fmt.Errorf("%d bytes follow the tuples of a %q message", len(data)-p, data[0])
	}
	return m, nil
}
