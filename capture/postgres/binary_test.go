package postgres

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/cdcd-dev/cdcd/change"
	"github.com/cdcd-dev/cdcd/internal/testenv"
)

// binaryCase is a type and a query whose column v yields values of it.
type binaryCase struct {
	name   string
	values string
	class  binaryClass
	enum   bool
}

// binaryCases cover every type cdcd reads from binary, with the edges of each (infinities, BC,
// the largest and smallest values, NaN, negative zero, empty arrays, lower bounds), many values the
// server generates, and types left to the server.
var binaryCases = []binaryCase{
	{"int2", `SELECT x::int2 FROM generate_series(-32768, 32767, 331) x UNION ALL VALUES (32767::int2), (0)`, binaryNative, false},
	{"int4", `SELECT x FROM generate_series(-2147483648, 2147483647, 9876543) x UNION ALL VALUES (2147483647), (0)`, binaryNative, false},
	{"int8", `SELECT x::int8 * 93248713 * 1000 FROM generate_series(-90000, 90000, 17) x UNION ALL VALUES (9223372036854775807), (-9223372036854775808)`, binaryNative, false},
	{"oid xid cid", `VALUES ('0'::oid), ('4294967295'::oid), ('12345'::oid)`, binaryNative, false},
	{"xid", `VALUES ('4294967295'::xid), ('3'::xid)`, binaryNative, false},
	{"numeric generated", `SELECT round(((random() - 0.5) * 10 ^ (g % 45 - 15))::numeric, g % 30) FROM generate_series(1, 3000) g`, binaryNative, false},
	{"numeric edges", `VALUES ('0'::numeric), ('0.000'), ('-0.0001'), ('1e-20'), ('10000'), ('9999.9999'), ('-123456789012345678901234567890.000000000000000000001'),
		('NaN'), ('Infinity'), ('-Infinity'), ('1e1000'), ('1e-1000'), ('0.1e-16382'), ('100000000.00000001'), ('-1'), ('12.5000'), (12345678::numeric(20, 7))`, binaryNative, false},
	{"float8", `SELECT (random() - 0.5) * 10 ^ (g % 600 - 300) FROM generate_series(1, 3000) g UNION ALL VALUES ('NaN'::float8), ('Infinity'), ('-Infinity'), ('-0'), ('4.9e-324'), ('1.7976931348623157e308'), (0.1), (0.30000000000000004)`, binaryNative, false},
	{"float4", `SELECT ((random() - 0.5) * 10 ^ (g % 70 - 35))::float4 FROM generate_series(1, 2000) g UNION ALL VALUES ('NaN'::float4), ('Infinity'), ('-0'), ('1e-45'), ('3.4028235e38'), (0.1)`, binaryNative, false},
	{"bool", `VALUES (true), (false)`, binaryNative, false},
	{"uuid", `SELECT gen_random_uuid() FROM generate_series(1, 300) UNION ALL VALUES ('00000000-0000-0000-0000-000000000000'::uuid), ('FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF')`, binaryNative, false},
	{"bytea", `SELECT decode(repeat(md5(g::text), g % 5), 'hex') FROM generate_series(1, 200) g UNION ALL VALUES ('\x'::bytea), ('\x00ff'::bytea)`, binaryNative, false},
	{"jsonb", `VALUES ('{"a": [1, 2.50, "x"], "b": null}'::jsonb), ('[]'), ('"é\n"'), ('1e400'), ('{"k": {"n": 1.0}}'), ('null')`, binaryNative, false},
	{"date", `SELECT '4713-01-01 BC'::date + g * 1913 FROM generate_series(0, 2000) g UNION ALL VALUES ('infinity'::date), ('-infinity'), ('5874897-12-31'), ('0001-01-01'), ('0001-12-31 BC'), ('2000-01-01'), ('1999-12-31'), ('2024-02-29')`, binaryNative, false},
	{"time", `SELECT '00:00'::time + (random() * 86400e6)::bigint * interval '1 microsecond' FROM generate_series(1, 1000) UNION ALL VALUES ('24:00:00'::time), ('00:00:00'), ('23:59:59.999999'), ('12:00:00.5'), ('01:02:03.000010')`, binaryNative, false},
	{"timetz", `SELECT ('12:34:56.' || g || (CASE WHEN g % 2 = 0 THEN '+' ELSE '-' END) || (g % 16) || ':' || lpad((g * 7 % 60)::text, 2, '0') || ':' || lpad((g % 3 * 15)::text, 2, '0'))::timetz FROM generate_series(1, 300) g
		UNION ALL VALUES ('00:00:00+00'::timetz), ('24:00:00-15:59'), ('23:59:59.999999+05:30'), ('10:00:00-00:00:01')`, binaryNative, false},
	{"timestamp", `SELECT '4713-01-01 00:00:00 BC'::timestamp + g * interval '1003 days 01:01:01.000001' FROM generate_series(0, 2500) g
		UNION ALL VALUES ('infinity'::timestamp), ('-infinity'), ('294276-12-31 23:59:59.999999'), ('2000-01-01 00:00:00'), ('1999-12-31 23:59:59.999999'), ('0001-01-01 00:00:00'), ('0001-12-31 23:59:59.5 BC')`, binaryNative, false},
	{"timestamptz", `SELECT '0001-01-01 00:00:00 BC'::timestamptz + g * interval '997 days 03:02:01.000007' FROM generate_series(0, 3700) g
		UNION ALL VALUES ('infinity'::timestamptz), ('-infinity'), ('2000-01-01 00:00:00+00'), ('1999-12-31 23:59:59.999999+00'), ('2026-01-02 03:04:05.123456+02'), ('0044-03-15 12:00:00+00 BC')`, binaryNative, false},
	{"interval", `SELECT make_interval(g % 20 - 10, g % 13 - 6, 0, g % 31 - 15, g % 25 - 12, g % 60 - 30, (g * 1.000001) % 60 - 30) FROM generate_series(1, 1000) g
		UNION ALL VALUES ('-00:00:01'::interval), ('178000000 years'), ('-178000000 years'), ('1 year 2 mons 3 days 04:05:06.5')`, binaryNative, false},
	{"int4[]", `VALUES ('{1,NULL,3}'::int4[]), ('{}'), ('{{1,2},{3,4}}'), ('[0:1][2:3]={{1,2},{3,4}}'), ('{{{1},{2}},{{3},{4}}}'), ('{NULL}')`, binaryNative, false},
	{"text[]", `VALUES ('{"a b","c\"d",NULL,"", "NULL", "é"}'::text[]), ('{}')`, binaryNative, false},
	{"numeric[]", `VALUES ('{1.50,-2,NaN,0.000}'::numeric[])`, binaryNative, false},
	{"date[] timestamptz[]", `VALUES (ARRAY['2024-01-01 BC'::date, 'infinity']::date[])`, binaryNative, false},
	{"timestamptz[]", `VALUES (ARRAY['2024-01-01 12:00:00.25+03'::timestamptz, '-infinity', NULL])`, binaryNative, false},
	{"uuid[] bool[] jsonb[]", `VALUES (ARRAY[gen_random_uuid(), NULL])`, binaryNative, false},
	{"bool[]", `VALUES (ARRAY[true, false, NULL])`, binaryNative, false},
	{"jsonb[]", `VALUES (ARRAY['{"a":1}'::jsonb, '[]'])`, binaryNative, false},
	{"float8[]", `VALUES (ARRAY['-0'::float8, 'NaN', 1e-300])`, binaryNative, false},
	{"text", `VALUES ('héllo "wörld"' || chr(10) || chr(9) || 'tab'), (''), (repeat('x', 100000))`, binaryIsText, false},
	{"varchar", `VALUES ('ten chars!'::varchar(10)), ('')`, binaryIsText, false},
	{"bpchar", `VALUES ('ab'::char(5)), ('é'::char(2))`, binaryIsText, false},
	{"name", `VALUES ('pg_class'::name)`, binaryIsText, false},
	{"json", `VALUES ('{"a" :  [1, 2.50]}'::json), ('"x"')`, binaryIsText, false},
	// Left to the server.
	{"char", `VALUES ('a'::"char"), (chr(233)::"char"), (''::"char")`, binaryViaServer, false},
	{"inet", `VALUES ('192.168.0.1/24'::inet), ('::1'), ('10.0.0.1')`, binaryViaServer, false},
	{"money", `VALUES ('12.34'::money), ('-0.01')`, binaryViaServer, false},
	{"point", `VALUES (point(1.5, -2)), (point('NaN', 0))`, binaryViaServer, false},
	{"int4range", `VALUES ('[1,5)'::int4range), ('empty'), ('(,3]')`, binaryViaServer, false},
	{"bit", `VALUES (B'10101'), (B'')`, binaryViaServer, false},
	{"macaddr[]", `VALUES ('{08:00:2b:01:02:03,NULL}'::macaddr[])`, binaryViaServer, false},
}

// TestBinaryMatchesTextOnTheServer: for every value, the binary form the server's send function
// writes decodes to exactly the value its text form (under sessionSettings) decodes to; the server
// renders both, so the oracle is PostgreSQL's own output function.
func TestBinaryMatchesTextOnTheServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn := sessionConn(ctx, t)
	schema := fmt.Sprintf("binary_values_%06d", rand.IntN(1_000_000))
	mustExec(t, conn, "CREATE SCHEMA "+schema)
	t.Cleanup(func() { _, _ = conn.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE") })
	mustExec(t, conn, "CREATE TYPE "+schema+".mood AS ENUM ('sad', 'ok', 'happy', 'é ü')")
	mustExec(t, conn, "CREATE TYPE "+schema+".pair AS (a int, b text, c date)")
	cases := append(binaryCases,
		binaryCase{"enum", `VALUES ('happy'::` + schema + `.mood), ('é ü')`, binaryIsText, true},
		binaryCase{"enum[]", `VALUES (ARRAY['ok'::` + schema + `.mood, NULL])`, binaryViaServer, false},
		binaryCase{"composite", `VALUES (ROW(1, 'x y', NULL)::` + schema + `.pair), (NULL::` + schema + `.pair)`, binaryViaServer, false})
	tm := pgtype.NewMap()
	// Every binary value decodes into one slab, and the comparison waits until all are decoded: a
	// value the slab's later use overwrote would differ from its text form's.
	var sl slab
	type decoded struct {
		name      string
		binary    []byte
		text      []byte
		got, want any
	}
	var all []decoded
	for _, c := range cases {
		res := conn.PgConn().ExecParams(ctx, "SELECT v, v FROM ("+c.values+") AS s(v)", nil, nil, nil,
			[]int16{pgtype.BinaryFormatCode, pgtype.TextFormatCode}).Read()
		if res.Err != nil {
			t.Fatalf("%s: %v", c.name, res.Err)
		}
		oid := res.FieldDescriptions[0].DataTypeOID
		if got := classify(tm, oid, c.enum); got != c.class {
			t.Errorf("%s: type %d is of class %d, want %d", c.name, oid, got, c.class)
			continue
		}
		for _, row := range res.Rows {
			if row[0] == nil || row[1] == nil {
				if row[0] != nil || row[1] != nil {
					t.Errorf("%s: one form of a value is NULL", c.name)
				}
				continue // NULL travels as a kind of its own, not as a value
			}
			want, err := decodeText(tm, nil, oid, row[1])
			if err != nil {
				t.Errorf("%s: text %q: %v", c.name, row[1], err)
				continue
			}
			var got any
			if c.class == binaryViaServer {
				text, err := serverText(ctx, conn.PgConn(), oid, row[0])
				if err == nil {
					got, err = decodeText(tm, &sl, oid, text)
				}
				if err != nil {
					t.Errorf("%s: %x through the server: %v", c.name, row[0], err)
					continue
				}
			} else if got, err = decodeBinaryAs(tm, &sl, c.class, oid, row[0]); err != nil {
				t.Errorf("%s: binary %x (text %q): %v", c.name, row[0], row[1], err)
				continue
			}
			all = append(all, decoded{c.name, row[0], row[1], got, want})
		}
	}
	for _, d := range all {
		if !sameDecoded(d.want, d.got) {
			t.Errorf("%s: binary %x decodes to %#v; its text %q decodes to %#v", d.name, d.binary, d.got, d.text, d.want)
		}
	}
	t.Logf("%d values of %d cases compared", len(all), len(cases))
}

// sameDecoded compares decoded values exactly: floats by their bits (NaN, -0), instants as UTC.
func sameDecoded(a, b any) bool {
	switch x := a.(type) {
	case time.Time:
		y, ok := b.(time.Time)
		return ok && x.Equal(y) && x.Location() == time.UTC && y.Location() == time.UTC
	case float64:
		y, ok := b.(float64)
		return ok && (x == y && (x != 0 || 1/x == 1/y) || x != x && y != y)
	case float32:
		y, ok := b.(float32)
		return ok && (x == y && (x != 0 || 1/x == 1/y) || x != x && y != y)
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) || (x == nil) != (y == nil) {
			return false
		}
		for i := range x {
			if !sameDecoded(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a, b)
}

// TestDecodeBinaryRefusesMalformedValues: a value shorter or longer than its type's form, or with
// a header that does not add up, is an error naming it, never a panic or a wrong value.
func TestDecodeBinaryRefusesMalformedValues(t *testing.T) {
	tm := pgtype.NewMap()
	for _, c := range []struct {
		name string
		oid  uint32
		data []byte
	}{
		{"int4 short", pgtype.Int4OID, []byte{0, 0, 1}},
		{"int8 long", pgtype.Int8OID, make([]byte, 9)},
		{"uuid short", pgtype.UUIDOID, make([]byte, 15)},
		{"jsonb version 2", pgtype.JSONBOID, []byte{2, '{', '}'}},
		{"jsonb empty", pgtype.JSONBOID, nil},
		{"numeric header only", pgtype.NumericOID, []byte{0, 1, 0, 0, 0, 0, 0, 0}},
		{"numeric digit 10000", pgtype.NumericOID, []byte{0, 1, 0, 0, 0, 0, 0, 0, 0x27, 0x10}},
		{"numeric bad sign", pgtype.NumericOID, []byte{0, 0, 0, 0, 0x12, 0x34, 0, 0}},
		{"time 25h", pgtype.TimeOID, []byte{0, 0, 0, 0x14, 0xf4, 0x6b, 0x04, 0x00}},
		{"time negative", pgtype.TimeOID, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{"array of a billion", pgtype.Int4ArrayOID, []byte{0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 23, 0x40, 0, 0, 0, 0, 0, 0, 1}},
		{"array of the wrong element", pgtype.Int4ArrayOID, []byte{0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 25, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 'x'}},
		{"array element overruns", pgtype.Int4ArrayOID, []byte{0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 23, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0, 1}},
		{"array trailing bytes", pgtype.Int4ArrayOID, []byte{0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 23, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 1, 7}},
		{"array negative dimension", pgtype.Int4ArrayOID, []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 23}},
		{"unknown type", 600, []byte{1, 2, 3}},
	} {
		if v, err := decodeBinary(tm, nil, c.oid, c.data); err == nil {
			t.Errorf("%s: decoded to %#v, want an error", c.name, v)
		}
	}
}

// TestBinaryValuesOfKnownForms pins a few forms PostgreSQL 15's send functions wrote (as commented),
// so that the decoder is tested without a server too.
func TestBinaryValuesOfKnownForms(t *testing.T) {
	tm := pgtype.NewMap()
	for _, c := range []struct {
		oid  uint32
		data []byte
		want any
	}{
		// numeric_send('1234.5600'): base-10000 digits 1234 and 5600, weight 0, scale 4.
		{pgtype.NumericOID, []byte{0, 2, 0, 0, 0, 0, 0, 4, 0x04, 0xd2, 0x15, 0xe0}, "1234.5600"},
		// numeric_send('-0.00012'): digits 1 and 2000 from weight -1, negative, scale 5.
		{pgtype.NumericOID, []byte{0, 2, 0xff, 0xff, 0x40, 0, 0, 5, 0, 1, 0x07, 0xd0}, "-0.00012"},
		{pgtype.DateOID, []byte{0, 0, 0, 0}, "2000-01-01"},
		// date_send('0001-12-31 BC')
		{pgtype.DateOID, []byte{0xff, 0xf4, 0xdb, 0xf8}, "0001-12-31 BC"},
		// timetz_send('12:00:00+05:30'): microseconds, then seconds west of UTC.
		{pgtype.TimetzOID, []byte{0, 0, 0, 0x0a, 0x0e, 0xeb, 0xb0, 0x00, 0xff, 0xff, 0xb2, 0xa8}, "12:00:00+05:30"},
		{pgtype.TimestampOID, []byte{0, 0, 0, 0, 0, 0, 0, 1}, "2000-01-01T00:00:00.000001"},
	} {
		got, err := decodeBinary(tm, nil, c.oid, c.data)
		if err != nil {
			t.Errorf("%x: %v", c.data, err)
			continue
		}
		if fmt.Sprint(got) != c.want {
			t.Errorf("%x decodes to %v, want %s", c.data, got, c.want)
		}
	}
}

// FuzzDecodeBinary: no input makes the binary decoders panic or allocate beyond their input.
func FuzzDecodeBinary(f *testing.F) {
	oids := []uint32{pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.NumericOID, pgtype.Float8OID, pgtype.UUIDOID,
		pgtype.JSONBOID, pgtype.DateOID, pgtype.TimeOID, pgtype.TimetzOID, pgtype.TimestampOID, pgtype.TimestamptzOID,
		pgtype.IntervalOID, pgtype.Int4ArrayOID, pgtype.TextArrayOID, pgtype.NumericArrayOID, pgtype.TimestamptzArrayOID}
	f.Add(uint8(3), []byte{0, 2, 0, 1, 0, 0, 0, 4, 0, 12, 0x0d, 0x80})
	f.Add(uint8(13), []byte{0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 23, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 1})
	f.Add(uint8(14), []byte{0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 25, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff})
	f.Add(uint8(11), []byte{0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	tm := pgtype.NewMap()
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		var sl slab
		_, _ = decodeBinary(tm, &sl, oids[int(which)%len(oids)], data)
	})
}

// BenchmarkDecodeWideBinary: decoding a row of cdcd-bench's wide shape (20 typed columns) from
// the binary forms the server's send functions write, per row, as the stream decodes it.
func BenchmarkDecodeWideBinary(b *testing.B) {
	ctx := context.Background()
	conn := sessionConn(ctx, b)
	res := conn.PgConn().ExecParams(ctx, `SELECT g::bigint, md5(g::text) || md5((g+1)::text), ((g % 100000) / 100.0)::numeric(12,2), now(),
		(g % 32000)::smallint, (g * 7)::int, g::bigint * 1000003, g * 1.5e-3, (g / 3.0)::real, (g * 12345.678901)::numeric(20,6),
		g % 2 = 0, date '2020-01-01' + g % 3650, timestamp '2020-01-01' + g * interval '1.5 second', now() - g * interval '1 ms',
		make_interval(secs => g % 86400), md5(g::text)::uuid, jsonb_build_object('id', g, 'tag', 'x' || g % 10),
		ARRAY['a' || g % 10, 'b'], ARRAY[g % 100, g % 7, 3]::int[], ('name ' || g)::varchar(40)
		FROM generate_series(1, 1000) g`, nil, nil, nil, []int16{pgtype.BinaryFormatCode}).Read()
	if res.Err != nil {
		b.Fatal(res.Err)
	}
	tm := pgtype.NewMap()
	rel := &relation{table: &change.Table{Schema: "bench", Name: "rows"}}
	for i, f := range res.FieldDescriptions {
		rel.table.Columns = append(rel.table.Columns, change.Column{Name: fmt.Sprint("c", i)})
		rel.oids = append(rel.oids, f.DataTypeOID)
		rel.binary = append(rel.binary, classify(tm, f.DataTypeOID, false))
	}
	tuples := make([]*pglogrepl.TupleData, len(res.Rows))
	for i, row := range res.Rows {
		tu := &pglogrepl.TupleData{}
		for _, v := range row {
			tu.Columns = append(tu.Columns, &pglogrepl.TupleDataColumn{DataType: pglogrepl.TupleDataTypeBinary, Data: v})
		}
		tuples[i] = tu
	}
	var sl slab
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := decodeTuple(tm, &sl, rel, tuples[i%len(tuples)], nil); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// sessionConn connects to the stack's PostgreSQL as cdcd does (sessionSettings in force), until the
// test ends.
func sessionConn(ctx context.Context, tb testing.TB) *pgx.Conn {
	tb.Helper()
	cc, err := connConfig(testenv.PostgresDSN(tb))
	if err != nil {
		tb.Fatal(err)
	}
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}
