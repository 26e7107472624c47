package mysql

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	"github.com/shopspring/decimal"
	"golang.org/x/text/encoding/charmap"

	"github.com/cdcd-dev/cdcd/change"
)

// ErrNoRowMetadata is returned when a table map event carries no column names: the server does not
// log binlog_row_metadata=FULL, without which names, keys and signedness are unknown.
var ErrNoRowMetadata = errors.New("the binlog carries no column names (binlog_row_metadata is not FULL)")

// column is how one column of a table map decodes.
type column struct {
	typ      byte // the real type: ENUM and SET told apart from STRING, as the table map encodes them
	meta     uint16
	unsigned bool
	charset  string   // of character columns; "binary" for BINARY, VARBINARY and BLOB
	values   []string // ENUM and SET members, in order
	length   int      // BINARY(n): n bytes, which the binlog stores without trailing zeros
}

// table is a captured table as one table map event describes it.
type table struct {
	t    *change.Table
	cols []column
	sig  string
	// signal marks source.mysql.signal_table: its rows are watermarks and signals, not data.
	signal bool
}

// field is the text of row's column name; "" when it is NULL or missing.
func (t *table) field(row change.Row, name string) string {
	for i, c := range t.t.Columns {
		if c.Name == name && i < len(row) && row[i].Kind == change.Present {
			if b, ok := row[i].V.([]byte); ok {
				return string(b)
			}
			return fmt.Sprint(row[i].V)
		}
	}
	return ""
}

// buildTable describes tm. charsets maps collation ids to character set names (the server's
// information_schema.COLLATIONS).
func buildTable(tm *replication.TableMapEvent, charsets map[uint64]string) (*table, error) {
	names := tm.ColumnNameString()
	if len(names) != int(tm.ColumnCount) {
		return nil, fmt.Errorf("table %s.%s: %w; set binlog_row_metadata=FULL in the server's configuration and restart it", tm.Schema, tm.Table, ErrNoRowMetadata)
	}
	unsigned := tm.UnsignedMap()
	collations := tm.CollationMap()
	enums, sets := tm.EnumStrValueMap(), tm.SetStrValueMap()
	t := &change.Table{Database: string(tm.Schema), Schema: string(tm.Schema), Name: string(tm.Table), FullBeforeImage: true}
	cols := make([]column, tm.ColumnCount)
	for i := range cols {
		c := column{typ: tm.ColumnType[i], meta: tm.ColumnMeta[i], unsigned: unsigned[i]}
		if c.typ == gomysql.MYSQL_TYPE_STRING {
			c.typ, c.length = stringType(c.meta)
		}
		switch c.typ {
		case gomysql.MYSQL_TYPE_ENUM:
			c.values = enums[i]
		case gomysql.MYSQL_TYPE_SET:
			c.values = sets[i]
		}
		if id, ok := collations[i]; ok {
			c.charset = charsets[id]
			if c.charset == "" {
				return nil, fmt.Errorf("table %s.%s column %s: collation id %d is unknown to the server's information_schema.COLLATIONS", tm.Schema, tm.Table, names[i], id)
			}
		}
		cols[i] = c
		t.Columns = append(t.Columns, change.Column{Name: names[i], Type: c.typeName()})
	}
	for _, k := range tm.PrimaryKey {
		if int(k) >= len(t.Columns) {
			return nil, fmt.Errorf("table %s.%s: primary key column %d of %d", tm.Schema, tm.Table, k, len(t.Columns))
		}
		t.Columns[k].Key = true
		t.KeyIndexes = append(t.KeyIndexes, int(k))
	}
	return &table{t: t, cols: cols, sig: signature(tm)}, nil
}

// signature tells two table maps of one table apart when the table's shape changed between them.
func signature(tm *replication.TableMapEvent) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s.%s|%x|%v|%x|%q|%v|%x|%v|%v|%v|%v", tm.Schema, tm.Table, tm.ColumnType, tm.ColumnMeta, tm.NullBitmap,
		tm.ColumnName, tm.PrimaryKey, tm.SignednessBitmap, tm.DefaultCharset, tm.ColumnCharset, tm.EnumStrValue, tm.SetStrValue)
	return b.String()
}

// stringType decodes the meta of a MYSQL_TYPE_STRING column: the real type (CHAR/BINARY, ENUM or
// SET) and the length in bytes.
func stringType(meta uint16) (byte, int) {
	if meta < 256 {
		return gomysql.MYSQL_TYPE_STRING, int(meta)
	}
	b0, b1 := byte(meta>>8), byte(meta&0xff)
	if b0&0x30 != 0x30 {
		return b0 | 0x30, int(uint16(b1) | uint16((b0&0x30)^0x30)<<4)
	}
	return b0, int(b1)
}

func (c column) typeName() string {
	u := ""
	if c.unsigned {
		u = " unsigned"
	}
	switch c.typ {
	case gomysql.MYSQL_TYPE_TINY:
		return "tinyint" + u
	case gomysql.MYSQL_TYPE_SHORT:
		return "smallint" + u
	case gomysql.MYSQL_TYPE_INT24:
		return "mediumint" + u
	case gomysql.MYSQL_TYPE_LONG:
		return "int" + u
	case gomysql.MYSQL_TYPE_LONGLONG:
		return "bigint" + u
	case gomysql.MYSQL_TYPE_NEWDECIMAL:
		return fmt.Sprintf("decimal(%d,%d)%s", c.meta>>8, c.meta&0xff, u)
	case gomysql.MYSQL_TYPE_FLOAT:
		return "float" + u
	case gomysql.MYSQL_TYPE_DOUBLE:
		return "double" + u
	case gomysql.MYSQL_TYPE_BIT:
		return fmt.Sprintf("bit(%d)", (c.meta>>8)*8+c.meta&0xff)
	case gomysql.MYSQL_TYPE_TIMESTAMP, gomysql.MYSQL_TYPE_TIMESTAMP2:
		return "timestamp"
	case gomysql.MYSQL_TYPE_DATETIME, gomysql.MYSQL_TYPE_DATETIME2:
		return "datetime"
	case gomysql.MYSQL_TYPE_TIME, gomysql.MYSQL_TYPE_TIME2:
		return "time"
	case gomysql.MYSQL_TYPE_DATE, gomysql.MYSQL_TYPE_NEWDATE:
		return "date"
	case gomysql.MYSQL_TYPE_YEAR:
		return "year"
	case gomysql.MYSQL_TYPE_ENUM:
		return "enum"
	case gomysql.MYSQL_TYPE_SET:
		return "set"
	case gomysql.MYSQL_TYPE_JSON:
		return "json"
	case gomysql.MYSQL_TYPE_GEOMETRY:
		return "geometry"
	case gomysql.MYSQL_TYPE_BLOB:
		if c.charset == "binary" {
			return "blob"
		}
		return "text"
	case gomysql.MYSQL_TYPE_VARCHAR, gomysql.MYSQL_TYPE_VAR_STRING:
		if c.charset == "binary" {
			return "varbinary"
		}
		return "varchar"
	case gomysql.MYSQL_TYPE_STRING:
		if c.charset == "binary" {
			return "binary"
		}
		return "char"
	}
	return fmt.Sprintf("mysql type %d", c.typ)
}

// fsp is the fractional-second precision of a temporal column.
func (c column) fsp() int {
	switch c.typ {
	case gomysql.MYSQL_TYPE_TIMESTAMP2, gomysql.MYSQL_TYPE_DATETIME2, gomysql.MYSQL_TYPE_TIME2:
		return int(c.meta)
	}
	return 0
}

// decodeRow turns go-mysql's decoded row into a change.Row. Every string and byte slice is copied:
// go-mysql's alias the event buffer.
func (t *table) decodeRow(raw []any) (change.Row, error) {
	if len(raw) != len(t.cols) {
		return nil, fmt.Errorf("table %s: a row of %d values for %d columns", t.t.QualifiedName(), len(raw), len(t.cols))
	}
	row := make(change.Row, len(raw))
	for i, v := range raw {
		if v == nil {
			row[i] = change.Value{Kind: change.Null}
			continue
		}
		x, err := t.cols[i].value(v)
		if err != nil {
			return nil, fmt.Errorf("table %s column %s (%s): %w", t.t.QualifiedName(), t.t.Columns[i].Name, t.t.Columns[i].Type, err)
		}
		row[i] = change.Value{V: x}
	}
	return row, nil
}

func (c column) value(v any) (any, error) {
	switch c.typ {
	case gomysql.MYSQL_TYPE_TINY, gomysql.MYSQL_TYPE_SHORT, gomysql.MYSQL_TYPE_INT24, gomysql.MYSQL_TYPE_LONG:
		return toInt64(v)
	case gomysql.MYSQL_TYPE_LONGLONG:
		if c.unsigned {
			if u, ok := v.(uint64); ok {
				return u, nil
			}
		}
		return toInt64(v)
	case gomysql.MYSQL_TYPE_YEAR:
		return toInt64(v)
	case gomysql.MYSQL_TYPE_NEWDECIMAL:
		d, ok := v.(decimal.Decimal)
		if !ok {
			return nil, fmt.Errorf("decimal decoded as %T", v)
		}
		// Decimal's String drops the declared scale's trailing zeros; 12.5000 stays 12.5000.
		return change.Decimal(d.StringFixed(int32(c.meta & 0xff))), nil
	case gomysql.MYSQL_TYPE_FLOAT:
		f, ok := v.(float32)
		if !ok {
			return nil, fmt.Errorf("float decoded as %T", v)
		}
		return f, nil
	case gomysql.MYSQL_TYPE_DOUBLE:
		f, ok := v.(float64)
		if !ok {
			return nil, fmt.Errorf("double decoded as %T", v)
		}
		return f, nil
	case gomysql.MYSQL_TYPE_BIT:
		n, ok := v.(int64)
		if !ok {
			return nil, fmt.Errorf("bit decoded as %T", v)
		}
		return uint64(n), nil // BIT(64) with the high bit set is not negative
	case gomysql.MYSQL_TYPE_TIMESTAMP, gomysql.MYSQL_TYPE_TIMESTAMP2:
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("timestamp decoded as %T", v)
		}
		if strings.HasPrefix(s, "0000-00-00") {
			return change.Timestamp(strings.Replace(s, " ", "T", 1)), nil
		}
		ts, err := time.ParseInLocation("2006-01-02 15:04:05.999999", s, time.UTC)
		if err != nil {
			return nil, err
		}
		return ts, nil
	case gomysql.MYSQL_TYPE_DATETIME, gomysql.MYSQL_TYPE_DATETIME2:
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("datetime decoded as %T", v)
		}
		return change.Timestamp(strings.Replace(s, " ", "T", 1)), nil
	case gomysql.MYSQL_TYPE_TIME, gomysql.MYSQL_TYPE_TIME2:
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("time decoded as %T", v)
		}
		// go-mysql drops an all-zero fraction: TIME(3) 10:00:00.000 must keep its digits.
		if f := c.fsp(); f > 0 && !strings.Contains(s, ".") {
			s += "." + strings.Repeat("0", f)
		}
		return change.Time(s), nil
	case gomysql.MYSQL_TYPE_DATE, gomysql.MYSQL_TYPE_NEWDATE:
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("date decoded as %T", v)
		}
		return change.Date(s), nil
	case gomysql.MYSQL_TYPE_ENUM:
		n, err := toInt64(v)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return "", nil // the error value '' of an invalid enum in non-strict mode
		}
		if int(n) > len(c.values) {
			return nil, fmt.Errorf("enum index %d of %d members", n, len(c.values))
		}
		return c.values[n-1], nil
	case gomysql.MYSQL_TYPE_SET:
		n, err := toInt64(v)
		if err != nil {
			return nil, err
		}
		var members []string
		for i, m := range c.values {
			if uint64(n)&(1<<i) != 0 {
				members = append(members, m)
			}
		}
		return strings.Join(members, ","), nil
	case gomysql.MYSQL_TYPE_JSON:
		switch x := v.(type) {
		case string:
			return change.JSON(strings.Clone(x)), nil
		case []byte:
			if len(x) == 0 {
				return change.JSON("null"), nil
			}
			return change.JSON(string(x)), nil
		}
		return nil, fmt.Errorf("json decoded as %T (a partial JSON update? set binlog_row_value_options='')", v)
	case gomysql.MYSQL_TYPE_GEOMETRY:
		b, ok := v.([]byte)
		if !ok {
			return nil, fmt.Errorf("geometry decoded as %T", v)
		}
		return slices.Clone(b), nil
	case gomysql.MYSQL_TYPE_BLOB, gomysql.MYSQL_TYPE_VARCHAR, gomysql.MYSQL_TYPE_VAR_STRING, gomysql.MYSQL_TYPE_STRING:
		var b []byte
		switch x := v.(type) {
		case []byte:
			b = x
		case string:
			b = []byte(x)
		default:
			return nil, fmt.Errorf("string decoded as %T", v)
		}
		return c.text(b)
	}
	return nil, fmt.Errorf("mysql type %d is not supported", c.typ)
}

// text renders character data in its column's character set as UTF-8, binary data as bytes.
func (c column) text(b []byte) (any, error) {
	switch c.charset {
	case "binary", "":
		out := slices.Clone(b)
		if c.typ == gomysql.MYSQL_TYPE_STRING && len(out) < c.length {
			// BINARY(n) is stored without its trailing zero bytes.
			out = append(out, make([]byte, c.length-len(out))...)
		}
		return out, nil
	case "utf8mb4", "utf8mb3", "utf8", "ascii":
		if !utf8.Valid(b) {
			return nil, fmt.Errorf("invalid %s text %q", c.charset, b)
		}
		return string(b), nil
	case "latin1":
		// MySQL's and MariaDB's latin1 is Windows-1252, not ISO-8859-1.
		s, err := charmap.Windows1252.NewDecoder().Bytes(b)
		if err != nil {
			return nil, err
		}
		return string(s), nil
	}
	return nil, fmt.Errorf("character set %s is not supported; convert the column to utf8mb4", c.charset)
}

func toInt64(v any) (int64, error) {
	switch x := v.(type) {
	case int8:
		return int64(x), nil
	case int16:
		return int64(x), nil
	case int32:
		return int64(x), nil
	case int64:
		return x, nil
	case int:
		return int64(x), nil
	case uint8:
		return int64(x), nil
	case uint16:
		return int64(x), nil
	case uint32:
		return int64(x), nil
	case uint64:
		if x > math.MaxInt64 {
			return 0, fmt.Errorf("%d does not fit a signed 64-bit integer", x)
		}
		return int64(x), nil
	}
	return 0, fmt.Errorf("integer decoded as %T", v)
}
