package mysql

import (
	"math"
	"reflect"
	"testing"
	"time"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/shopspring/decimal"

	"github.com/cdcd-dev/cdcd/change"
)

// TestColumnValue covers what go-mysql hands over for each type, and the traps between its values
// and the column's true value.
func TestColumnValue(t *testing.T) {
	dec := func(s string) decimal.Decimal { return decimal.RequireFromString(s) }
	tests := []struct {
		name string
		col  column
		in   any
		want any
	}{
		{"bigint unsigned max stays unsigned", column{typ: gomysql.MYSQL_TYPE_LONGLONG, unsigned: true}, uint64(math.MaxUint64), uint64(math.MaxUint64)},
		{"bigint signed min", column{typ: gomysql.MYSQL_TYPE_LONGLONG}, int64(math.MinInt64), int64(math.MinInt64)},
		{"int unsigned max", column{typ: gomysql.MYSQL_TYPE_LONG, unsigned: true}, uint32(math.MaxUint32), int64(math.MaxUint32)},
		{"mediumint", column{typ: gomysql.MYSQL_TYPE_INT24}, int32(-8388608), int64(-8388608)},
		{"tinyint unsigned", column{typ: gomysql.MYSQL_TYPE_TINY, unsigned: true}, uint8(255), int64(255)},
		{"decimal keeps its declared scale", column{typ: gomysql.MYSQL_TYPE_NEWDECIMAL, meta: 30<<8 | 4}, dec("12.5"), change.Decimal("12.5000")},
		{"decimal negative fraction", column{typ: gomysql.MYSQL_TYPE_NEWDECIMAL, meta: 10<<8 | 2}, dec("-0.5"), change.Decimal("-0.50")},
		{"decimal 65 digits", column{typ: gomysql.MYSQL_TYPE_NEWDECIMAL, meta: 65<<8 | 0}, dec("99999999999999999999999999999999999999999999999999999999999999999"), change.Decimal("99999999999999999999999999999999999999999999999999999999999999999")},
		{"float stays float32", column{typ: gomysql.MYSQL_TYPE_FLOAT}, float32(1.1), float32(1.1)},
		{"double", column{typ: gomysql.MYSQL_TYPE_DOUBLE}, 0.1, 0.1},
		{"bit(64) high bit is not negative", column{typ: gomysql.MYSQL_TYPE_BIT, meta: 8 << 8}, int64(-1), uint64(math.MaxUint64)},
		{"time keeps its declared fraction", column{typ: gomysql.MYSQL_TYPE_TIME2, meta: 3}, "10:00:00", change.Time("10:00:00.000")},
		{"time negative over 24h", column{typ: gomysql.MYSQL_TYPE_TIME2, meta: 0}, "-838:59:59", change.Time("-838:59:59")},
		{"datetime", column{typ: gomysql.MYSQL_TYPE_DATETIME2, meta: 6}, "2024-02-29 23:59:59.000001", change.Timestamp("2024-02-29T23:59:59.000001")},
		{"datetime zero", column{typ: gomysql.MYSQL_TYPE_DATETIME2}, "0000-00-00 00:00:00", change.Timestamp("0000-00-00T00:00:00")},
		{"timestamp is an instant in UTC", column{typ: gomysql.MYSQL_TYPE_TIMESTAMP2, meta: 6}, "2024-02-29 23:59:59.123456", time.Date(2024, 2, 29, 23, 59, 59, 123456000, time.UTC)},
		{"timestamp zero", column{typ: gomysql.MYSQL_TYPE_TIMESTAMP2}, "0000-00-00 00:00:00", change.Timestamp("0000-00-00T00:00:00")},
		{"date zero", column{typ: gomysql.MYSQL_TYPE_DATE}, "0000-00-00", change.Date("0000-00-00")},
		{"year zero", column{typ: gomysql.MYSQL_TYPE_YEAR}, 0, int64(0)},
		{"year", column{typ: gomysql.MYSQL_TYPE_YEAR}, 2155, int64(2155)},
		{"enum by index", column{typ: gomysql.MYSQL_TYPE_ENUM, values: []string{"a", "b"}}, int64(2), "b"},
		{"enum invalid is empty", column{typ: gomysql.MYSQL_TYPE_ENUM, values: []string{"a", "b"}}, int64(0), ""},
		{"set by bitmap", column{typ: gomysql.MYSQL_TYPE_SET, values: []string{"x", "y", "z"}}, int64(5), "x,z"},
		{"set empty", column{typ: gomysql.MYSQL_TYPE_SET, values: []string{"x"}}, int64(0), ""},
		{"binary(n) gets its trailing zeros back", column{typ: gomysql.MYSQL_TYPE_STRING, charset: "binary", length: 4}, "ab", []byte{'a', 'b', 0, 0}},
		{"varbinary keeps its length", column{typ: gomysql.MYSQL_TYPE_VARCHAR, charset: "binary"}, "a\x00", []byte{'a', 0}},
		{"latin1 is windows-1252", column{typ: gomysql.MYSQL_TYPE_VARCHAR, charset: "latin1"}, "caf\xe9 \x80", "café €"},
		{"utf8mb4", column{typ: gomysql.MYSQL_TYPE_BLOB, charset: "utf8mb4"}, []byte("😀"), "😀"},
		{"json text", column{typ: gomysql.MYSQL_TYPE_JSON}, `{"a":1}`, change.JSON(`{"a":1}`)},
		{"json empty is the JSON null", column{typ: gomysql.MYSQL_TYPE_JSON}, []byte{}, change.JSON("null")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.col.value(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("value(%#v) = %#v (%T), want %#v (%T)", tc.in, got, got, tc.want, tc.want)
			}
		})
	}
}

func TestColumnValueRefusesWhatItCannotRender(t *testing.T) {
	for name, tc := range map[string]struct {
		col column
		in  any
	}{
		"invalid utf8":          {column{typ: gomysql.MYSQL_TYPE_VARCHAR, charset: "utf8mb4"}, "\xff"},
		"unknown charset":       {column{typ: gomysql.MYSQL_TYPE_VARCHAR, charset: "sjis"}, "x"},
		"enum index past":       {column{typ: gomysql.MYSQL_TYPE_ENUM, values: []string{"a"}}, int64(2)},
		"partial json":          {column{typ: gomysql.MYSQL_TYPE_JSON}, 42},
		"unsupported type code": {column{typ: 0xf0}, "x"},
	} {
		if v, err := tc.col.value(tc.in); err == nil {
			t.Errorf("%s: value = %#v, want an error", name, v)
		}
	}
}

// TestBinaryBufferIsCopied: go-mysql's strings and byte slices alias a buffer it reuses.
func TestBinaryBufferIsCopied(t *testing.T) {
	buf := []byte("abcd")
	c := column{typ: gomysql.MYSQL_TYPE_BLOB, charset: "binary"}
	v, err := c.value(buf)
	if err != nil {
		t.Fatal(err)
	}
	buf[0] = 'z'
	if string(v.([]byte)) != "abcd" {
		t.Errorf("the value changed with go-mysql's buffer: %q", v)
	}
}
