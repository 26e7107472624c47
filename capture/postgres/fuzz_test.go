package postgres

import (
	"fmt"
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/cdcd-dev/cdcd/change"
)

// fuzzRelation has a column of every type the decoder knows, so that a fuzzed tuple reaches each.
var fuzzOIDs = []uint32{pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.NumericOID, pgtype.Float4OID,
	pgtype.Float8OID, pgtype.BoolOID, pgtype.TextOID, pgtype.ByteaOID, pgtype.JSONBOID, pgtype.DateOID,
	pgtype.TimeOID, pgtype.TimetzOID, pgtype.TimestampOID, pgtype.TimestamptzOID, pgtype.IntervalOID,
	pgtype.UUIDOID, pgtype.Int4ArrayOID, pgtype.TextArrayOID, pgtype.NumericArrayOID, 16384 /* an enum */}

func fuzzRelation(n int) *relation {
	m := &pglogrepl.RelationMessage{RelationID: 1, Namespace: "s", RelationName: "t", ReplicaIdentity: 'd'}
	for i := range n {
		m.Columns = append(m.Columns, &pglogrepl.RelationMessageColumn{Name: string(rune('a' + i%26)), DataType: fuzzOIDs[i%len(fuzzOIDs)], Flags: uint8(i % 2)})
	}
	return newRelation("db", m, map[uint32]typeInfo{}, nil, pgtype.NewMap())
}

// FuzzDecodeMessage: whatever bytes arrive as a pgoutput message, parsing and decoding its tuples
// returns a value or an error, never panics, and a decoded row has one value per column.
func FuzzDecodeMessage(f *testing.F) {
	tuple := func(cols ...string) []byte {
		b := []byte{0, byte(len(cols))}
		for _, c := range cols {
			if c == "" {
				b = append(b, 'n')
				continue
			}
			b = append(b, 't', 0, 0, 0, byte(len(c)))
			b = append(b, c...)
		}
		return b
	}
	insert := append([]byte{'I', 0, 0, 0, 1, 'N'}, tuple("7", "", "12.5")...)
	f.Add(insert)
	f.Add(append([]byte{'U', 0, 0, 0, 1, 'K'}, append(tuple("1", "x"), append([]byte{'N'}, tuple("2", "y")...)...)...))
	f.Add(append([]byte{'D', 0, 0, 0, 1, 'O'}, tuple("1", "2", "3", "4")...))
	f.Add([]byte{'T', 0, 0, 0, 1, 0, 0, 0, 0, 1})
	tm := pgtype.NewMap()
	f.Fuzz(func(t *testing.T, data []byte) {
		msg, err := parseMessage(data, &tupleReader{})
		if err != nil {
			return
		}
		var tuples []*pglogrepl.TupleData
		switch m := msg.(type) {
		case *pglogrepl.InsertMessage:
			tuples = append(tuples, m.Tuple)
		case *pglogrepl.UpdateMessage:
			tuples = append(tuples, m.OldTuple, m.NewTuple)
		case *pglogrepl.DeleteMessage:
			tuples = append(tuples, m.OldTuple)
		}
		var sl slab
		for _, tu := range tuples {
			if tu == nil {
				continue
			}
			rel := fuzzRelation(len(tu.Columns))
			row, err := decodeTuple(tm, &sl, rel, tu, nil)
			if err != nil {
				continue
			}
			if len(row) != len(rel.table.Columns) {
				t.Fatalf("%d values for %d columns", len(row), len(rel.table.Columns))
			}
			keyOnly(rel, row)
			for i, v := range row {
				if v.Kind == change.Present && v.V == nil {
					t.Fatalf("column %d is present without a value", i)
				}
			}
		}
	})
}

// FuzzDecodeText: any text, as any type the decoder knows, decodes or errs without panicking.
func FuzzDecodeText(f *testing.F) {
	for i, s := range []string{"1", "12.5", "NaN", "t", `\x00ff`, `{"a":1}`, "2026-01-02", "23:59:59", "2026-01-02 03:04:05+00", "1 day", "{1,NULL,3}", `{{"a"},{"b"}}`} {
		f.Add(uint8(i), s)
	}
	tm := pgtype.NewMap()
	f.Fuzz(func(t *testing.T, which uint8, s string) {
		_, _ = decodeText(tm, nil, fuzzOIDs[int(which)%len(fuzzOIDs)], []byte(s))
	})
}

// TestParseMessageRefusesMalformed: messages whose lengths point past their end are errors, not
// panics or huge allocations.
func TestParseMessageRefusesMalformed(t *testing.T) {
	for name, data := range map[string][]byte{
		"empty":                      {},
		"insert without a tuple":     {'I', 0, 0, 0, 1},
		"a column longer than all":   {'I', 0, 0, 0, 1, 'N', 0, 1, 't', 0xf6, 0x3d, 0xee, 0x01, '1'},
		"a truncated column length":  {'D', 0, 0, 0, 1, 'K', 0, 1, 't', 0, 0},
		"more relations than bytes":  {'T', 0x30, 0x30, 0x30, 0x30, 0, 0, 0, 0, 1},
		"a logical message too long": append(append([]byte{'M', 1, 0, 0, 0, 0, 0, 0, 0, 1}, "p\x00"...), 0x7f, 0, 0, 0, 'x'),
		"an unknown tuple marker":    {'U', 0, 0, 0, 1, 'Z', 0, 0},
		"a second new tuple":         {'I', 0, 0, 0, 1, 'N', 0, 1, 'n', 'N', 0, 1, 'n'},
		"a byte after the tuple":     {'D', 0, 0, 0, 1, 'K', 0, 1, 'n', 0},
		"an old tuple without a new": {'U', 0, 0, 0, 1, 'O', 0, 1, 'n'},
	} {
		if _, err := parseMessage(data, &tupleReader{}); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
	ok := []byte{'I', 0, 0, 0, 1, 'N', 0, 2, 'n', 't', 0, 0, 0, 1, '7'}
	if m, err := parseMessage(ok, &tupleReader{}); err != nil {
		t.Errorf("a well-formed insert: %v", err)
	} else if ins, _ := m.(*pglogrepl.InsertMessage); ins == nil || string(ins.Tuple.Columns[1].Data) != "7" {
		t.Errorf("a well-formed insert parsed as %#v", m)
	}
}

// FuzzRowMessagesAsPglogrepl: every row message the tuple reader accepts (it checks the lengths
// itself), pglogrepl (an independent decoder of the same protocol) accepts too and reads the same
// relation, tuple kinds and columns; the reader is reused across inputs, as the stream reuses it.
func FuzzRowMessagesAsPglogrepl(f *testing.F) {
	tuple := func(cols ...string) []byte {
		b := []byte{0, byte(len(cols))}
		for _, c := range cols {
			switch c {
			case "":
				b = append(b, 'n')
			case "~":
				b = append(b, 'u')
			default:
				b = append(b, 't', 0, 0, 0, byte(len(c)))
				b = append(b, c...)
			}
		}
		return b
	}
	f.Add(append([]byte{'I', 0, 0, 0, 1, 'N'}, tuple("7", "", "12.5")...))
	f.Add(append([]byte{'U', 0, 0, 0, 1, 'K'}, append(tuple("1", "x"), append([]byte{'N'}, tuple("2", "~")...)...)...))
	f.Add(append([]byte{'U', 0, 0, 0, 2, 'N'}, tuple("2", "y", "")...))
	f.Add(append([]byte{'D', 0, 0, 0, 1, 'O'}, tuple("1", "2", "3", "4")...))
	f.Add([]byte{'I', 0, 0, 0, 1, 'N', 0, 1, 'b', 0, 0, 0, 2, 0xff, 0x00})
	var tr tupleReader
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 || (data[0] != 'I' && data[0] != 'U' && data[0] != 'D') {
			return
		}
		ours, err := tr.read(data)
		if err != nil {
			return
		}
		theirs, err := func() (m pglogrepl.Message, err error) {
			defer func() {
				if p := recover(); p != nil {
					err = fmt.Errorf("panic: %v", p)
				}
			}()
			return pglogrepl.Parse(data)
		}()
		if err != nil {
			if data[0] == 'I' && len(data) == 8 {
				// An insert into a table without columns: pglogrepl wants at least one more byte
				// than the message has, PostgreSQL sends it, and the reader reads it.
				return
			}
			t.Fatalf("%x: the tuple reader accepts it, pglogrepl does not: %v", data, err)
		}
		if got, want := describeRow(ours), describeRow(theirs); got != want {
			t.Fatalf("%x: the tuple reader reads\n%s\npglogrepl reads\n%s", data, got, want)
		}
	})
}

// describeRow renders a row message's relation, tuple kinds and columns.
func describeRow(m pglogrepl.Message) string {
	tuple := func(t *pglogrepl.TupleData) string {
		if t == nil {
			return "none"
		}
		s := fmt.Sprintf("%d:", t.ColumnNum)
		for _, c := range t.Columns {
			s += fmt.Sprintf(" %c/%d/%x", c.DataType, c.Length, c.Data)
		}
		return s
	}
	switch m := m.(type) {
	case *pglogrepl.InsertMessage:
		return fmt.Sprintf("insert %d new %s", m.RelationID, tuple(m.Tuple))
	case *pglogrepl.UpdateMessage:
		return fmt.Sprintf("update %d old %q %s new %s", m.RelationID, m.OldTupleType, tuple(m.OldTuple), tuple(m.NewTuple))
	case *pglogrepl.DeleteMessage:
		return fmt.Sprintf("delete %d old %q %s", m.RelationID, m.OldTupleType, tuple(m.OldTuple))
	}
	return fmt.Sprintf("%T", m)
}
