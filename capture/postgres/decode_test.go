package postgres

import (
	"fmt"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/cdcd-dev/cdcd/change"
)

func TestDecodeText(t *testing.T) {
	tm := pgtype.NewMap()
	tests := []struct {
		oid  uint32
		text string
		want any
	}{
		{pgtype.Int2OID, "-32768", int64(-32768)},
		{pgtype.Int8OID, "9223372036854775807", int64(math.MaxInt64)},
		{pgtype.NumericOID, "12.5000", change.Decimal("12.5000")},
		{pgtype.NumericOID, "-0.000000000000000000000000000001", change.Decimal("-0.000000000000000000000000000001")},
		{pgtype.NumericOID, "NaN", change.Decimal("NaN")},
		{pgtype.Float4OID, "0.1", float32(0.1)},
		{pgtype.Float8OID, "0.30000000000000004", 0.30000000000000004},
		{pgtype.Float8OID, "-Infinity", math.Inf(-1)},
		{pgtype.BoolOID, "t", true},
		{pgtype.TextOID, "héllo\nworld", "héllo\nworld"},
		{pgtype.BPCharOID, "ab  ", "ab  "},
		{pgtype.ByteaOID, `\x00fe`, []byte{0, 0xfe}},
		{pgtype.DateOID, "2026-02-28", change.Date("2026-02-28")},
		{pgtype.TimeOID, "23:59:59.999999", change.Time("23:59:59.999999")},
		{pgtype.TimestampOID, "2026-01-02 03:04:05.5", change.Timestamp("2026-01-02T03:04:05.5")},
		{pgtype.TimestampOID, "infinity", change.Timestamp("infinity")},
		{pgtype.TimestamptzOID, "2026-01-02 03:04:05.123456+00", time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC)},
		{pgtype.TimestamptzOID, "-infinity", change.Text("-infinity")},
		{pgtype.IntervalOID, "1 year 2 mons 3 days 04:05:06.5", change.Interval{Months: 14, Days: 3, Microseconds: 14706500000}},
		{pgtype.IntervalOID, "-00:00:01", change.Interval{Microseconds: -1000000}},
		{pgtype.UUIDOID, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
		{pgtype.JSONBOID, `{"a": 1}`, change.JSON(`{"a": 1}`)},
		{pgtype.Int4ArrayOID, "{1,NULL,3}", []any{int64(1), nil, int64(3)}},
		{pgtype.TextArrayOID, `{"a b","c\"d",NULL,"NULL"}`, []any{"a b", `c"d`, nil, "NULL"}},
		{pgtype.NumericArrayOID, "{1.50,2}", []any{change.Decimal("1.50"), change.Decimal("2")}},
		{pgtype.Int4ArrayOID, "{{1,2},{3,4}}", []any{[]any{int64(1), int64(2)}, []any{int64(3), int64(4)}}},
		{pgtype.Int4ArrayOID, "{}", []any{}},
		{999999, "happy", change.Text("happy")},
	}
	for _, tc := range tests {
		got, err := decodeText(tm, nil, tc.oid, []byte(tc.text))
		if err != nil {
			t.Errorf("decodeText(%d, %q): %v", tc.oid, tc.text, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("decodeText(%d, %q) = %#v, want %#v", tc.oid, tc.text, got, tc.want)
		}
	}
}

func TestDecodeTextErrors(t *testing.T) {
	tm := pgtype.NewMap()
	for _, tc := range []struct {
		oid  uint32
		text string
	}{{pgtype.Int4OID, "x"}, {pgtype.BoolOID, "yes"}, {pgtype.Float8OID, "1e"}, {pgtype.IntervalOID, "soon"}, {pgtype.Int4ArrayOID, "{1,"}} {
		if v, err := decodeText(tm, nil, tc.oid, []byte(tc.text)); err == nil {
			t.Errorf("decodeText(%d, %q) = %v, want an error", tc.oid, tc.text, v)
		}
	}
}

func FuzzDecodeArray(f *testing.F) {
	f.Add(`{1,2,NULL}`)
	f.Add(`{{"a",b},{c,"d\""}}`)
	tm := pgtype.NewMap()
	f.Fuzz(func(t *testing.T, s string) {
		for _, oid := range []uint32{pgtype.TextArrayOID, pgtype.Int8ArrayOID, pgtype.NumericArrayOID} {
			v, err := decodeText(tm, nil, oid, []byte(s))
			if err == nil && v == nil {
				t.Fatalf("%q decoded to nil without an error", s)
			}
			_ = fmt.Sprint(v)
		}
	})
}

func BenchmarkDecodeTuple(b *testing.B) {
	tm := pgtype.NewMap()
	rel := &relation{table: &change.Table{Schema: "s", Name: "t", Columns: []change.Column{{Name: "id"}, {Name: "payload"}, {Name: "amount"}, {Name: "at"}}},
		oids: []uint32{pgtype.Int8OID, pgtype.TextOID, pgtype.NumericOID, pgtype.TimestamptzOID}}
	tuple := &pglogrepl.TupleData{Columns: []*pglogrepl.TupleDataColumn{
		{DataType: 't', Data: []byte("123456")}, {DataType: 't', Data: []byte("e10adc3949ba59abbe56e057f20f883e5d41402abc4b2a76b9719d911017c592")},
		{DataType: 't', Data: []byte("1234.56")}, {DataType: 't', Data: []byte("2026-11-22 06:17:05.230533+00")}}}
	var sl slab
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeTuple(tm, &sl, rel, tuple, nil); err != nil {
			b.Fatal(err)
		}
	}
}
