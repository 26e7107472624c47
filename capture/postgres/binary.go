package postgres

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/cdcd-dev/cdcd/change"
)

// BinaryMode says in which form the stream asks pgoutput for column values.
type BinaryMode string

const (
	// BinaryAuto asks for binary values (PostgreSQL 14+) when cdcd reads the binary form of every
	// column type of the publication's tables itself, and for text otherwise.
	BinaryAuto BinaryMode = "auto"
	// BinaryOff always asks for text.
	BinaryOff BinaryMode = "off"
)

// binaryClass is how cdcd reads a column's values when pgoutput sends them in binary form. pgoutput's
// binary option covers the whole stream: the server then sends every value whose type has a send
// function in binary, so a decoder is needed for every type that can appear.
type binaryClass uint8

const (
	// binaryViaServer: cdcd does not read the type's binary form; the server renders the value as
	// text (its receive, then its output function), which is decoded as in text mode.
	binaryViaServer binaryClass = iota
	// binaryIsText: the binary form is the text form (text, varchar, char(n), name, json, enums).
	binaryIsText
	// binaryNative: decodeBinary reads it.
	binaryNative
)

// classify says how values of type oid (a domain's base type) are read from binary. An array is
// native when pgx knows it (as text mode needs too) and its elements are read without the server.
// "char" is left to the server: its text form escapes bytes above 127 (from PostgreSQL 15), its
// binary form does not.
func classify(tm *pgtype.Map, oid uint32, enum bool) binaryClass {
	if enum {
		return binaryIsText
	}
	switch oid {
	case pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.NameOID, pgtype.JSONOID:
		return binaryIsText
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.OIDOID, pgtype.XIDOID, pgtype.CIDOID,
		pgtype.NumericOID, pgtype.Float4OID, pgtype.Float8OID, pgtype.BoolOID, pgtype.UUIDOID, pgtype.ByteaOID,
		pgtype.JSONBOID, pgtype.DateOID, pgtype.TimeOID, pgtype.TimetzOID, pgtype.TimestampOID,
		pgtype.TimestamptzOID, pgtype.IntervalOID:
		return binaryNative
	}
	if typ, ok := tm.TypeForOID(oid); ok {
		if ac, ok := typ.Codec.(*pgtype.ArrayCodec); ok && classify(tm, ac.ElementType.OID, false) != binaryViaServer {
			return binaryNative
		}
	}
	return binaryViaServer
}

// decodeBinaryAs decodes one binary value of a type of class c; for binaryViaServer it is an error.
func decodeBinaryAs(tm *pgtype.Map, sl *slab, c binaryClass, oid uint32, data []byte) (any, error) {
	switch c {
	case binaryIsText:
		return decodeText(tm, sl, oid, data)
	case binaryNative:
		return decodeBinary(tm, sl, oid, data)
	}
	return nil, fmt.Errorf("cdcd does not read type %d from binary", oid)
}

// errShort is a binary value shorter than its type's form.
var errShort = errors.New("binary value is truncated")

// decodeBinary decodes one value of a binaryNative type, in the form its send function writes,
// into exactly the value decodeText gives for the same value's text form (with sessionSettings in
// force). Data is copied (text into sl): the caller's buffer is reused.
func decodeBinary(tm *pgtype.Map, sl *slab, oid uint32, data []byte) (any, error) {
	need := func(n int) error {
		if len(data) != n {
			return fmt.Errorf("%w: %d bytes, want %d", errShort, len(data), n)
		}
		return nil
	}
	be := binary.BigEndian
	switch oid {
	case pgtype.Int2OID:
		if err := need(2); err != nil {
			return nil, err
		}
		return boxWord(sl, int64(int16(be.Uint16(data)))), nil
	case pgtype.Int4OID:
		if err := need(4); err != nil {
			return nil, err
		}
		return boxWord(sl, int64(int32(be.Uint32(data)))), nil
	case pgtype.Int8OID:
		if err := need(8); err != nil {
			return nil, err
		}
		return boxWord(sl, int64(be.Uint64(data))), nil
	case pgtype.OIDOID, pgtype.XIDOID, pgtype.CIDOID:
		if err := need(4); err != nil {
			return nil, err
		}
		return boxWord(sl, int64(be.Uint32(data))), nil
	case pgtype.Float4OID:
		if err := need(4); err != nil {
			return nil, err
		}
		return boxWord(sl, math.Float32frombits(be.Uint32(data))), nil
	case pgtype.Float8OID:
		if err := need(8); err != nil {
			return nil, err
		}
		return boxWord(sl, math.Float64frombits(be.Uint64(data))), nil
	case pgtype.BoolOID:
		if err := need(1); err != nil {
			return nil, err
		}
		return data[0] != 0, nil
	case pgtype.UUIDOID:
		if err := need(16); err != nil {
			return nil, err
		}
		var b [36]byte
		hex.Encode(b[0:8], data[0:4])
		b[8] = '-'
		hex.Encode(b[9:13], data[4:6])
		b[13] = '-'
		hex.Encode(b[14:18], data[6:8])
		b[18] = '-'
		hex.Encode(b[19:23], data[8:10])
		b[23] = '-'
		hex.Encode(b[24:36], data[10:16])
		return boxString(sl, sl.string(b[:])), nil
	case pgtype.ByteaOID:
		return append([]byte{}, data...), nil
	case pgtype.JSONBOID:
		if len(data) < 1 || data[0] != 1 {
			return nil, errors.New("jsonb: not version 1 of its binary form")
		}
		return boxString(sl, change.JSON(sl.string(data[1:]))), nil
	case pgtype.NumericOID:
		var buf [64]byte
		s, err := appendNumeric(buf[:0], data)
		if err != nil {
			return nil, err
		}
		return boxString(sl, change.Decimal(sl.string(s))), nil
	case pgtype.DateOID:
		if err := need(4); err != nil {
			return nil, err
		}
		var buf [16]byte
		return boxString(sl, change.Date(sl.string(appendDate(buf[:0], int32(be.Uint32(data)))))), nil
	case pgtype.TimeOID:
		if err := need(8); err != nil {
			return nil, err
		}
		var buf [16]byte
		clock, err := appendTimeOfDay(buf[:0], "time", data)
		if err != nil {
			return nil, err
		}
		return boxString(sl, change.Time(sl.string(clock))), nil
	case pgtype.TimetzOID:
		if err := need(12); err != nil {
			return nil, err
		}
		var buf [32]byte
		clock, err := appendTimeOfDay(buf[:0], "timetz", data)
		if err != nil {
			return nil, err
		}
		return boxString(sl, change.TimeTZ(sl.string(appendZone(clock, int32(be.Uint32(data[8:])))))), nil
	case pgtype.TimestampOID:
		if err := need(8); err != nil {
			return nil, err
		}
		us := int64(be.Uint64(data))
		if s, ok := infinityText(us); ok {
			return change.Timestamp(s), nil
		}
		var buf [40]byte
		return boxString(sl, change.Timestamp(sl.string(appendTimestamp(buf[:0], us, 'T', false)))), nil
	case pgtype.TimestamptzOID:
		if err := need(8); err != nil {
			return nil, err
		}
		us := int64(be.Uint64(data))
		if s, ok := infinityText(us); ok {
			return change.Text(s), nil
		}
		t := fromPostgresEpoch(us)
		if t.Year() <= 0 {
			// As in text mode: Go's time has no era, so a BC instant stays the server's text.
			return change.Text(appendTimestamp(nil, us, ' ', true)), nil
		}
		return sl.boxInstant(t), nil
	case pgtype.IntervalOID:
		if err := need(16); err != nil {
			return nil, err
		}
		return sl.boxInterval(change.Interval{Microseconds: int64(be.Uint64(data)), Days: int32(be.Uint32(data[8:])), Months: int32(be.Uint32(data[12:]))}), nil
	}
	if typ, ok := tm.TypeForOID(oid); ok {
		if ac, ok := typ.Codec.(*pgtype.ArrayCodec); ok {
			return decodeBinaryArray(tm, sl, ac.ElementType.OID, data)
		}
	}
	return nil, fmt.Errorf("cdcd does not read type %d from binary", oid)
}

// decodeBinaryArray reads array_send's form: dimensions, flags, element type, each dimension's
// length and lower bound, then each element as a length (-1 for NULL) and its bytes. The result is
// shaped as decodeArray shapes the text form: lower bounds are dropped.
func decodeBinaryArray(tm *pgtype.Map, sl *slab, elemOID uint32, data []byte) (any, error) {
	be := binary.BigEndian
	if len(data) < 12 {
		return nil, fmt.Errorf("array: %w", errShort)
	}
	ndim := int(int32(be.Uint32(data)))
	if got := be.Uint32(data[8:]); got != elemOID {
		return nil, fmt.Errorf("array: elements of type %d, want %d", got, elemOID)
	}
	if ndim < 0 || ndim > 6 || len(data) < 12+8*ndim {
		return nil, fmt.Errorf("array: %d dimensions in %d bytes", ndim, len(data))
	}
	if ndim == 0 {
		return []any{}, nil
	}
	dims := make([]pgtype.ArrayDimension, ndim)
	count := 1
	p := 12
	for i := range dims {
		n := int32(be.Uint32(data[p:]))
		dims[i] = pgtype.ArrayDimension{Length: n, LowerBound: int32(be.Uint32(data[p+4:]))}
		p += 8
		// Every element takes at least four bytes, which bounds what a corrupt header can ask for.
		if n < 0 || int64(count)*int64(n) > int64(len(data)-p)/4+1 {
			return nil, fmt.Errorf("array: dimension of %d elements in %d bytes", n, len(data))
		}
		count *= int(n)
	}
	class := classify(tm, elemOID, false)
	flat := sl.elements(count)
	for i := range flat {
		if p+4 > len(data) {
			return nil, fmt.Errorf("array element %d: %w", i, errShort)
		}
		n := int32(be.Uint32(data[p:]))
		p += 4
		if n == -1 {
			continue
		}
		if n < 0 || int(n) > len(data)-p {
			return nil, fmt.Errorf("array element %d: %w", i, errShort)
		}
		v, err := decodeBinaryAs(tm, sl, class, elemOID, data[p:p+int(n)])
		if err != nil {
			return nil, fmt.Errorf("array element %d: %w", i, err)
		}
		flat[i] = v
		p += int(n)
	}
	if p != len(data) {
		return nil, fmt.Errorf("array: %d bytes after the last element", len(data)-p)
	}
	return sl.boxArray(nest(flat, dims)), nil
}

// appendNumeric appends numeric_send's form (digit count, weight, sign, display scale, base-10000
// digits) as numeric_out renders it: every integer digit, then exactly dscale fraction digits.
func appendNumeric(b []byte, data []byte) ([]byte, error) {
	be := binary.BigEndian
	if len(data) < 8 {
		return nil, fmt.Errorf("numeric: %w", errShort)
	}
	ndigits := int(be.Uint16(data))
	weight := int(int16(be.Uint16(data[2:])))
	sign := be.Uint16(data[4:])
	dscale := int(be.Uint16(data[6:]))
	if len(data) != 8+2*ndigits {
		return nil, fmt.Errorf("numeric: %d digits in %d bytes", ndigits, len(data))
	}
	switch sign {
	case 0xC000:
		return append(b, "NaN"...), nil
	case 0xD000:
		return append(b, "Infinity"...), nil
	case 0xF000:
		return append(b, "-Infinity"...), nil
	case 0x0000, 0x4000:
	default:
		return nil, fmt.Errorf("numeric: sign %#x", sign)
	}
	if dscale > 0x3FFF {
		return nil, fmt.Errorf("numeric: display scale %d", dscale)
	}
	digit := func(i int) (int, error) {
		if i < 0 || i >= ndigits {
			return 0, nil
		}
		d := int(be.Uint16(data[8+2*i:]))
		if d > 9999 {
			return 0, fmt.Errorf("numeric: digit %d is not below 10000", d)
		}
		return d, nil
	}
	b = slices.Grow(b, 2+4*max(weight+1, 1)+dscale)
	if sign == 0x4000 {
		b = append(b, '-')
	}
	if weight < 0 {
		b = append(b, '0')
	}
	var four [4]byte
	put4 := func(d int) []byte {
		four[0], four[1], four[2], four[3] = byte('0'+d/1000), byte('0'+d/100%10), byte('0'+d/10%10), byte('0'+d%10)
		return four[:]
	}
	for i := 0; i <= weight; i++ {
		d, err := digit(i)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			b = strconv.AppendInt(b, int64(d), 10)
		} else {
			b = append(b, put4(d)...)
		}
	}
	if dscale > 0 {
		b = append(b, '.')
		for i, n := weight+1, 0; n < dscale; i++ {
			d, err := digit(i)
			if err != nil {
				return nil, err
			}
			take := min(4, dscale-n)
			b = append(b, put4(d)[:take]...)
			n += take
		}
	}
	return b, nil
}

// infinityText is the text of the timestamps that stand for infinity and -infinity.
func infinityText(us int64) (string, bool) {
	switch us {
	case math.MaxInt64:
		return "infinity", true
	case math.MinInt64:
		return "-infinity", true
	}
	return "", false
}

// postgresEpoch is 2000-01-01 00:00:00 UTC, where PostgreSQL's dates and timestamps count from.
const postgresEpoch = 946684800

func fromPostgresEpoch(us int64) time.Time {
	sec, frac := us/1_000_000, us%1_000_000
	if frac < 0 {
		sec, frac = sec-1, frac+1_000_000
	}
	return time.Unix(postgresEpoch+sec, frac*1000).UTC()
}

// appendDate appends date_send's days since 2000-01-01 as date_out renders them under DateStyle
// ISO: the proleptic Gregorian calendar, years zero-padded to four digits, "BC" for years before 1.
func appendDate(b []byte, days int32) []byte {
	switch days {
	case math.MaxInt32:
		return append(b, "infinity"...)
	case math.MinInt32:
		return append(b, "-infinity"...)
	}
	y, m, d := time.Unix(postgresEpoch+int64(days)*86400, 0).UTC().Date()
	b = appendYMD(b, y, int(m), d)
	if y <= 0 {
		b = append(b, " BC"...)
	}
	return b
}

func appendYMD(b []byte, y, m, d int) []byte {
	if y <= 0 {
		y = 1 - y
	}
	b = appendPadded(b, y, 4)
	b = append(b, '-')
	b = appendPadded(b, m, 2)
	b = append(b, '-')
	return appendPadded(b, d, 2)
}

// appendPadded appends n (not negative) zero-padded to width digits.
func appendPadded(b []byte, n, width int) []byte {
	for d, limit := 1, 10; d < width; d, limit = d+1, limit*10 {
		if n < limit {
			b = append(b, '0')
		}
	}
	return strconv.AppendInt(b, int64(n), 10)
}

// appendTimeOfDay appends the microseconds since midnight that time and timetz begin with, as
// time_out renders them; 24:00:00 is a time of day to PostgreSQL.
func appendTimeOfDay(b []byte, typ string, data []byte) ([]byte, error) {
	us := int64(binary.BigEndian.Uint64(data))
	if us < 0 || us > 24*3600*1_000_000 {
		return nil, fmt.Errorf("%s: %d microseconds is not a time of day", typ, us)
	}
	return clockText(b, us), nil
}

// clockText appends a time of day in microseconds as time_out does: HH:MM:SS, then the fraction
// of a second without trailing zeros, if any.
func clockText(b []byte, us int64) []byte {
	sec, frac := us/1_000_000, us%1_000_000
	b = appendPadded(b, int(sec/3600), 2)
	b = append(b, ':')
	b = appendPadded(b, int(sec/60%60), 2)
	b = append(b, ':')
	b = appendPadded(b, int(sec%60), 2)
	if frac != 0 {
		b = appendPadded(append(b, '.'), int(frac), 6)
		for b[len(b)-1] == '0' {
			b = b[:len(b)-1]
		}
	}
	return b
}

// appendZone appends a time zone offset (timetz_send gives seconds west of UTC) as PostgreSQL's ISO
// style writes it: +HH, +HH:MM when there are minutes, +HH:MM:SS when there are seconds.
func appendZone(b []byte, west int32) []byte {
	sign := byte('+')
	if west > 0 {
		sign = '-'
	}
	sec := int(west)
	if sec < 0 {
		sec = -sec
	}
	h, m, s := sec/3600, sec/60%60, sec%60
	b = append(b, sign)
	b = appendPadded(b, h, 2)
	if m != 0 || s != 0 {
		b = append(b, ':')
		b = appendPadded(b, m, 2)
	}
	if s != 0 {
		b = append(b, ':')
		b = appendPadded(b, s, 2)
	}
	return b
}

// appendTimestamp appends timestamp_send's microseconds since 2000-01-01 as timestamp_out renders
// them under DateStyle ISO, with sep between date and time; withZone adds timestamptz's "+00"
// (TimeZone is UTC).
func appendTimestamp(b []byte, us int64, sep byte, withZone bool) []byte {
	t := fromPostgresEpoch(us)
	y, m, d := t.Date()
	b = appendYMD(b, y, int(m), d)
	b = append(b, sep)
	h, mi, s := t.Clock()
	b = clockText(b, (int64(h)*3600+int64(mi)*60+int64(s))*1_000_000+int64(t.Nanosecond()/1000))
	if withZone {
		b = append(b, "+00"...)
	}
	if y <= 0 {
		b = append(b, " BC"...)
	}
	return b
}

// chooseBinary says whether the stream asks for binary values: under BinaryAuto when the server is
// PostgreSQL 14 or newer and cdcd reads the binary form of every column of the publication's tables
// itself. It logs why not otherwise.
func (r *Reader) chooseBinary(ctx context.Context) (bool, error) {
	if r.cfg.Binary == BinaryOff {
		return false, nil
	}
	if r.version < 140000 {
		r.log.Info("streaming values as text: binary pgoutput needs PostgreSQL 14 or newer")
		return false, nil
	}
	rows, err := r.meta.Query(ctx, `SELECT p.schemaname, p.tablename, a.attname, format_type(a.atttypid, NULL),
			CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END, coalesce(b.typtype, t.typtype) = 'e'
		FROM pg_publication_tables p
		JOIN pg_namespace n ON n.nspname = p.schemaname
		JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename
		JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
		JOIN pg_type t ON t.oid = a.atttypid
		LEFT JOIN pg_type b ON t.typtype = 'd' AND b.oid = t.typbasetype
		WHERE p.pubname = $1
		ORDER BY 1, 2, a.attnum`, r.cfg.Publication)
	if err != nil {
		return false, fmt.Errorf("reading the column types of publication %s: %w", r.cfg.Publication, err)
	}
	defer rows.Close()
	for rows.Next() {
		var schema, table, column, typ string
		var oid uint32
		var enum bool
		if err := rows.Scan(&schema, &table, &column, &typ, &oid, &enum); err != nil {
			return false, fmt.Errorf("reading the column types of publication %s: %w", r.cfg.Publication, err)
		}
		if classify(r.tm, oid, enum) == binaryViaServer {
			rows.Close()
			r.log.Info("streaming values as text: cdcd does not read this column's type from binary pgoutput",
				"column", schema+"."+table+"."+column, "type", typ)
			return false, nil
		}
	}
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("reading the column types of publication %s: %w", r.cfg.Publication, err)
	}
	r.log.Info("streaming values in binary form")
	return true, nil
}

// binaryRelation prepares rel for binary values: a column of a type cdcd does not read from binary
// (a table that joined the publication, or a column added, after the stream started) is rendered
// by the server, one round trip per value, which is said once per table.
func (s *streamState) binaryRelation(ctx context.Context, rel *relation) {
	meta := s.r.meta
	rel.textOf = func(oid uint32, data []byte) ([]byte, error) { return serverText(ctx, meta.PgConn(), oid, data) }
	name := rel.table.QualifiedName()
	for i, c := range rel.binary {
		if c == binaryViaServer && !s.viaServer[name] {
			if s.viaServer == nil {
				s.viaServer = map[string]bool{}
			}
			s.viaServer[name] = true
			s.r.log.Warn("cdcd does not read this column's type from binary pgoutput: each of its values is rendered by the server; a restart streams text",
				"column", name+"."+rel.table.Columns[i].Name, "type", rel.table.Columns[i].Type)
		}
	}
}

// serverText asks the server for the text form of a value in binary form: the type's receive
// function, then its output function, under the connection's session settings (sessionSettings,
// as on the replication connection).
func serverText(ctx context.Context, conn *pgconn.PgConn, oid uint32, data []byte) ([]byte, error) {
	res := conn.ExecParams(ctx, "SELECT $1", [][]byte{data}, []uint32{oid}, []int16{pgtype.BinaryFormatCode}, []int16{pgtype.TextFormatCode}).Read()
	if res.Err != nil {
		return nil, res.Err
	}
	if len(res.Rows) != 1 || len(res.Rows[0]) != 1 || res.Rows[0][0] == nil {
		return nil, fmt.Errorf("the server did not render a value of type %d", oid)
	}
	return res.Rows[0][0], nil
}
