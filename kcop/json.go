package kcop

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/cdcd-dev/cdcd/change"
)

// The json KCOP's defaults.
const (
	jsonDefaultTopic      = "cdcd.{schema}.{table}"
	jsonDefaultTombstones = true
)

func init() {
	Register("json", NewJSON)
	Document("json",
		topicDoc, topicsDoc,
		OptionDoc{"tombstones", "bool", strconv.FormatBool(jsonDefaultTombstones), "write a tombstone (the key with a null value) after each delete"})
}

// JSON writes a Debezium-like envelope without a schema registry:
//
//	key:   {"<key column>": value, ...}   (null when the table has no key)
//	value: {"before": {...}|null, "after": {...}|null, "op": "c|u|d|r|t", "ts_ms": ...,
//	        "source": {"db", "schema", "table", "txId", "pos", "op_index", "ts_ms", "snapshot"},
//	        "unchanged": ["col", ...]}   (only when the source did not send some values)
//
// A column the source did not send (an unchanged TOAST value) is left out of "after" and named in
// "unchanged"; a column absent from a key-only before image is left out of "before". Neither is ever
// written as null. Exact types stay exact: numeric is a string ("12.5000"), int8 a JSON integer,
// bytea base64, timestamptz RFC 3339 in UTC, interval ISO 8601, json/jsonb as a string holding the
// document (so the document null, "null", differs from SQL NULL, null).
//
// A delete is followed by a tombstone (the key with a null value) unless tombstones is false. An update
// that changes the key is written as a delete of the old key (and its tombstone), then the update
// under the new key.
//
// Options: topic (template with {database}, {schema}, {table}; default "cdcd.{schema}.{table}"),
// tombstones (default true).
type JSON struct {
	shapes     *tableShapes
	tombstones bool
	now        func() time.Time
	// sizeHint is the room new envelopes start with: the largest written lately, so that an
	// envelope is rendered once, not grown and copied.
	sizeHint atomic.Int64
	// out holds *recordSlabs: Process may run on several workers at once, each with a slab.
	out sync.Pool
}

// tableShape is what the JSON-rendering KCOPs derive once per table shape: the table's topic, each
// column's name as an object key with its colon, and the envelope's source block up to the
// transaction's fields.
type tableShape struct {
	topic  string
	fields []string
	source string
}

// tableShapes keeps a KCOP's tableShapes, its topics from its template.
type tableShapes struct {
	cache  tableCache[*tableShape]
	derive func(*change.Table) (*tableShape, error) // made once: a method value per row would allocate
}

func newTableShapes(topic topicTemplate) *tableShapes {
	return &tableShapes{derive: func(t *change.Table) (*tableShape, error) {
		sh := &tableShape{topic: topic.expand(t), fields: make([]string, len(t.Columns))}
		for i, c := range t.Columns {
			sh.fields[i] = string(append(appendString(nil, c.Name), ':'))
		}
		b := append([]byte(nil), `,"source":{"db":`...)
		b = appendString(b, t.Database)
		b = append(b, `,"schema":`...)
		b = appendString(b, t.Schema)
		b = append(b, `,"table":`...)
		sh.source = string(appendString(b, t.Name))
		return sh, nil
	}}
}

// of is t's shape.
func (s *tableShapes) of(t *change.Table) *tableShape {
	sh, _ := s.cache.Get(t, s.derive)
	return sh
}

// maxSizeHint bounds sizeHint: one very wide row does not make every envelope large.
const maxSizeHint = 16 << 10

// jsonOptions are the json KCOP's options.
type jsonOptions struct {
	topicOptions `mapstructure:",squash"`
	Tombstones   bool `mapstructure:"tombstones"`
}

// NewJSON is the Factory of the json KCOP.
func NewJSON(opts Options) (KCOP, error) {
	o := jsonOptions{topicOptions: defaultTopicOptions(), Tombstones: jsonDefaultTombstones}
	if err := opts.Decode(&o); err != nil {
		return nil, err
	}
	topic, err := o.route()
	if err != nil {
		return nil, err
	}
	return &JSON{shapes: newTableShapes(topic), tombstones: o.Tombstones, now: time.Now}, nil
}

// Process implements KCOP.
func (j *JSON) Process(_ context.Context, c *change.Change, dst []Record) ([]Record, error) {
	sh := j.shapes.of(c.Table)
	topic := sh.topic
	// A value of a Go type the rendering does not know makes rendered false; the error then names
	// its column. Checking the rows before rendering cost a pass over every value of every row.
	// The envelopes render every row a key is taken from, so they alone need watching.
	rendered, n := true, len(dst)
	out, _ := j.out.Get().(*recordSlab)
	if out == nil {
		out = &recordSlab{}
	}
	defer j.out.Put(out)
	envelope := func(op change.Op, before, after change.Row) []byte {
		b, ok := j.envelope(out, c, sh, op, before, after)
		rendered = rendered && ok
		return b
	}
	key := func(row change.Row) []byte {
		return out.end(appendKey(out.begin(keyRoom), c.Table, sh.fields, row))
	}
	switch c.Op {
	case change.Delete:
		k := key(c.Before)
		dst = append(dst, Record{Topic: topic, Partition: PartitionByKey, Key: k, Value: envelope(change.Delete, c.Before, nil)})
		if j.tombstones && k != nil {
			dst = append(dst, Record{Topic: topic, Partition: PartitionByKey, Key: k})
		}
	case change.Update:
		if c.KeyChanged {
			oldKey := key(c.Before)
			dst = append(dst, Record{Topic: topic, Partition: PartitionByKey, Key: oldKey, Value: envelope(change.Delete, c.Before, nil)})
			if j.tombstones && oldKey != nil {
				dst = append(dst, Record{Topic: topic, Partition: PartitionByKey, Key: oldKey})
			}
		}
		dst = append(dst, Record{Topic: topic, Partition: PartitionByKey, Key: key(c.After), Value: envelope(change.Update, c.Before, c.After)})
	case change.Insert, change.Read:
		dst = append(dst, Record{Topic: topic, Partition: PartitionByKey, Key: key(c.After), Value: envelope(c.Op, nil, c.After)})
	case change.Truncate:
		dst = append(dst, Record{Topic: topic, Partition: PartitionByKey, Value: envelope(change.Truncate, nil, nil)})
	default:
		return dst, fmt.Errorf("json: unknown operation %v on %s", c.Op, c.Table.QualifiedName())
	}
	if !rendered {
		for _, row := range []change.Row{c.Before, c.After} {
			if err := checkRenderable(c.Table, row); err != nil {
				return dst[:n], err
			}
		}
		// renderable and appendAny disagree: never write the null that stands in for the value.
		return dst[:n], fmt.Errorf("json: a value of %s could not be rendered", c.Table.QualifiedName())
	}
	return dst, nil
}

// envelope renders the change's value into out; false when a value of the rows is of a Go type it
// does not know.
func (j *JSON) envelope(out *recordSlab, c *change.Change, sh *tableShape, op change.Op, before, after change.Row) ([]byte, bool) {
	hint := j.sizeHint.Load()
	b := out.begin(max(256, int(hint)))
	b = append(b, `{"before":`...)
	b, beforeOK := appendRow(b, sh.fields, before)
	b = append(b, `,"after":`...)
	b, afterOK := appendRow(b, sh.fields, after)
	b = append(b, `,"op":"`...)
	b = append(b, byte(op))
	b = append(b, `","ts_ms":`...)
	b = strconv.AppendInt(b, j.now().UnixMilli(), 10)
	b = append(b, sh.source...)
	b = append(b, `,"txId":`...)
	b = appendString(b, c.Txn.ID)
	b = append(b, `,"pos":`...)
	b = appendString(b, c.Txn.Position)
	b = append(b, `,"op_index":`...)
	b = strconv.AppendInt(b, c.Index, 10)
	b = append(b, `,"ts_ms":`...)
	if c.Txn.CommitTime.IsZero() {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendInt(b, c.Txn.CommitTime.UnixMilli(), 10)
	}
	b = append(b, `,"snapshot":`...)
	b = strconv.AppendBool(b, c.Txn.Snapshot)
	b = append(b, '}')
	if after != nil {
		first := true
		for i, v := range after {
			if v.Kind != change.Unchanged {
				continue
			}
			if first {
				b = append(b, `,"unchanged":[`...)
				first = false
			} else {
				b = append(b, ',')
			}
			b = appendString(b, c.Table.Columns[i].Name)
		}
		if !first {
			b = append(b, ']')
		}
	}
	b = append(b, '}')
	if n := int64(len(b)); n > hint && n <= maxSizeHint {
		j.sizeHint.Store(n + n/8)
	}
	return out.end(b), beforeOK && afterOK
}

// appendKey renders the key columns of row, or returns nil when the table has no key or the row
// lacks a key value. Fields are the columns' rendered names (tableShape's). A value of a Go type
// the rendering does not know becomes null: the callers check or render the whole row too.
func appendKey(b []byte, t *change.Table, fields []string, row change.Row) []byte {
	if len(t.KeyIndexes) == 0 || row == nil {
		return nil
	}
	if b == nil {
		b = make([]byte, 0, 64)
	}
	b = append(b, '{')
	for n, i := range t.KeyIndexes {
		if i >= len(row) || row[i].Kind == change.Absent || row[i].Kind == change.Unchanged {
			return nil
		}
		if n > 0 {
			b = append(b, ',')
		}
		b = append(b, fields[i]...)
		b, _ = appendValue(b, row[i])
	}
	return append(b, '}')
}

// appendRow renders row as an object of the columns it holds; fields are the columns' rendered
// names (tableShape's). False when a value is of a Go type the rendering does not know.
func appendRow(b []byte, fields []string, row change.Row) ([]byte, bool) {
	if row == nil {
		return append(b, "null"...), true
	}
	b = append(b, '{')
	first, rendered := true, true
	for i, v := range row {
		if v.Kind == change.Absent || v.Kind == change.Unchanged {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, fields[i]...)
		var ok bool
		b, ok = appendValue(b, v)
		rendered = rendered && ok
	}
	return append(b, '}'), rendered
}

// appendValue renders v; false when it is of a Go type the rendering does not know.
func appendValue(b []byte, v change.Value) ([]byte, bool) {
	if v.Kind == change.Null {
		return append(b, "null"...), true
	}
	return appendAny(b, v.V)
}

// appendAny renders v; false, with null in its place, when it is of a Go type the rendering does
// not know (renderable says which it knows).
func appendAny(b []byte, v any) ([]byte, bool) {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), true
	case int64:
		return strconv.AppendInt(b, x, 10), true
	case uint64:
		return strconv.AppendUint(b, x, 10), true
	case float64:
		return appendFloat(b, x, 64), true
	case float32:
		return appendFloat(b, float64(x), 32), true
	case bool:
		return strconv.AppendBool(b, x), true
	case string:
		return appendString(b, x), true
	case []byte:
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, x)
		return append(b, '"'), true
	case change.Decimal:
		return appendString(b, string(x)), true
	case change.JSON:
		// A document as a string, as Debezium's io.debezium.data.Json: the JSON document null
		// ("null") stays apart from SQL NULL (null).
		return appendString(b, string(x)), true
	case change.Date:
		return appendString(b, string(x)), true
	case change.Time:
		return appendString(b, string(x)), true
	case change.TimeTZ:
		return appendString(b, string(x)), true
	case change.Timestamp:
		return appendString(b, string(x)), true
	case time.Time:
		b = append(b, '"')
		b = appendInstant(b, x)
		return append(b, '"'), true
	case change.Interval:
		b = append(b, '"')
		b = appendISOInterval(b, x)
		return append(b, '"'), true
	case change.Text:
		return appendString(b, string(x)), true
	case []any:
		b = append(b, '[')
		rendered := true
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			var ok bool
			b, ok = appendAny(b, e)
			rendered = rendered && ok
		}
		return append(b, ']'), rendered
	}
	return append(b, "null"...), false
}

// checkRenderable reports a value of a Go type the JSON rendering does not know, naming the column,
// rather than rendering it as some string nobody asked for.
func checkRenderable(t *change.Table, row change.Row) error {
	for i, v := range row {
		if v.Kind != change.Present || renderable(v.V) {
			continue
		}
		return fmt.Errorf("json: column %s of %s holds a value of Go type %T, which the json KCOP cannot render", t.Columns[i].Name, t.QualifiedName(), v.V)
	}
	return nil
}

func renderable(v any) bool {
	switch x := v.(type) {
	case nil, int64, uint64, float64, float32, bool, string, []byte, change.Decimal, change.JSON, change.Date,
		change.Time, change.TimeTZ, change.Timestamp, time.Time, change.Interval, change.Text:
		return true
	case []any:
		for _, e := range x {
			if !renderable(e) {
				return false
			}
		}
		return true
	}
	return false
}

// appendFloat writes the shortest text that reads back as the same float of that size; NaN and
// the infinities, which JSON numbers cannot express, become the strings "NaN", "Infinity", "-Infinity".
func appendFloat(b []byte, f float64, bits int) []byte {
	switch {
	case math.IsNaN(f):
		return append(b, `"NaN"`...)
	case math.IsInf(f, 1):
		return append(b, `"Infinity"`...)
	case math.IsInf(f, -1):
		return append(b, `"-Infinity"`...)
	}
	return strconv.AppendFloat(b, f, 'g', -1, bits)
}

// appendInstant appends t in UTC as RFC 3339 with the fraction of a second trimmed of trailing
// zeros, exactly as t.UTC().AppendFormat(b, time.RFC3339Nano), without parsing the layout for
// every value.
func appendInstant(b []byte, t time.Time) []byte {
	t = t.UTC()
	y, mo, d := t.Date()
	if y < 0 || y > 9999 {
		return t.AppendFormat(b, time.RFC3339Nano)
	}
	h, mi, sec := t.Clock()
	b = appendDigits(b, y, 4)
	b = append(b, '-')
	b = appendDigits(b, int(mo), 2)
	b = append(b, '-')
	b = appendDigits(b, d, 2)
	b = append(b, 'T')
	b = appendDigits(b, h, 2)
	b = append(b, ':')
	b = appendDigits(b, mi, 2)
	b = append(b, ':')
	b = appendDigits(b, sec, 2)
	if ns := t.Nanosecond(); ns != 0 {
		b = append(b, '.')
		b = appendDigits(b, ns, 9)
		for b[len(b)-1] == '0' {
			b = b[:len(b)-1]
		}
	}
	return append(b, 'Z')
}

// appendDigits appends n (0 <= n < 10^width) as exactly width digits.
func appendDigits(b []byte, n, width int) []byte {
	b = append(b, make([]byte, width)...)
	for i := len(b) - 1; i >= len(b)-width; i-- {
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return b
}

// isoInterval renders an interval as ISO 8601, e.g. P1Y2M3DT4H5M6.5S; each part keeps its sign.
func isoInterval(iv change.Interval) string { return string(appendISOInterval(nil, iv)) }

// appendISOInterval appends isoInterval's form of iv.
func appendISOInterval(b []byte, iv change.Interval) []byte {
	start := len(b)
	b = append(b, 'P')
	if y := iv.Months / 12; y != 0 {
		b = append(strconv.AppendInt(b, int64(y), 10), 'Y')
	}
	if m := iv.Months % 12; m != 0 {
		b = append(strconv.AppendInt(b, int64(m), 10), 'M')
	}
	if iv.Days != 0 {
		b = append(strconv.AppendInt(b, int64(iv.Days), 10), 'D')
	}
	if us := iv.Microseconds; us != 0 {
		b = append(b, 'T')
		// The magnitude as unsigned: the most negative interval has no positive int64.
		neg, mag := us < 0, uint64(us)
		if neg {
			mag = -mag
		}
		part := func(n uint64, unit byte) {
			if neg {
				b = append(b, '-')
			}
			b = append(strconv.AppendUint(b, n, 10), unit)
		}
		h, m := mag/3_600_000_000, mag/60_000_000%60
		s, frac := mag/1_000_000%60, mag%1_000_000
		if h != 0 {
			part(h, 'H')
		}
		if m != 0 {
			part(m, 'M')
		}
		if frac != 0 {
			if neg {
				b = append(b, '-')
			}
			b = append(strconv.AppendUint(b, s, 10), '.')
			var six [6]byte
			for i := 5; i >= 0; i-- {
				six[i] = byte('0' + frac%10)
				frac /= 10
			}
			b = append(append(b, bytes.TrimRight(six[:], "0")...), 'S')
		} else if s != 0 {
			part(s, 'S')
		}
	}
	if len(b)-start == 1 {
		return append(b[:start], "PT0S"...)
	}
	return b
}

const hexDigits = "0123456789abcdef"

// plain8 reports whether the first eight bytes of s are ASCII a JSON string holds as they are: no
// control character, quote, backslash or byte of a multi-byte character. It tests the eight at
// once, as one word (a byte below n sets its high bit in x - n*lsb & ^x, and only such a byte).
func plain8(s string) bool {
	const lsb, msb = 0x0101010101010101, 0x8080808080808080
	x := uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
	quote, backslash := x^(lsb*'"'), x^(lsb*'\\')
	special := (x-lsb*0x20)&^x | (quote-lsb)&^quote | (backslash-lsb)&^backslash | x
	return special&msb == 0
}

// appendString writes s as a JSON string; invalid UTF-8 becomes U+FFFD, as encoding/json does.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if i+8 <= len(s) && plain8(s[i:]) {
			i += 8
			continue
		}
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

var (
	topicDoc  = OptionDoc{"topic", "string", jsonDefaultTopic, "the topic of each table's records; {database}, {schema} and {table} are replaced"}
	topicsDoc = OptionDoc{"topics", "map", "", "per-table topics overriding topic, e.g. {public.orders: orders.all}; templates too"}
)

// topicOptions are every formatter's topic options: a template for all tables, and per-table
// overrides (schema.table, MySQL: database.table) that may be templates too.
type topicOptions struct {
	Topic  string            `mapstructure:"topic"`
	Topics map[string]string `mapstructure:"topics"`
}

func defaultTopicOptions() topicOptions { return topicOptions{Topic: jsonDefaultTopic} }

// route parses the options into the topic template with its overrides.
func (o topicOptions) route() (topicTemplate, error) {
	t, err := parseTopicTemplate(o.Topic)
	if err != nil {
		return t, err
	}
	for table, topic := range o.Topics {
		if s, n, ok := strings.Cut(table, "."); !ok || s == "" || n == "" {
			return t, fmt.Errorf("option topics: %q is not qualified; write it as schema.table (MySQL: database.table)", table)
		}
		over, err := parseTopicTemplate(topic)
		if err != nil {
			return t, fmt.Errorf("option topics: %s: %w", table, err)
		}
		if t.overrides == nil {
			t.overrides = map[string]topicTemplate{}
		}
		t.overrides[table] = over
	}
	return t, nil
}

// topicTemplate is a topic name with {database}, {schema} and {table} placeholders, and the
// templates of the tables that override it.
type topicTemplate struct {
	parts     []string
	overrides map[string]topicTemplate
	// names holds each table's topic once made: making it costs a string or two per record.
	names *tableCache[string]
}

func parseTopicTemplate(s string) (topicTemplate, error) {
	if s == "" {
		return topicTemplate{}, fmt.Errorf("option topic: is empty; use a template such as cdcd.{schema}.{table}")
	}
	var parts []string
	rest := s
	for rest != "" {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			parts = append(parts, rest)
			break
		}
		if i > 0 {
			parts = append(parts, rest[:i])
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return topicTemplate{}, fmt.Errorf("option topic: %q has an unclosed {", s)
		}
		ph := rest[i : i+j+1]
		switch ph {
		case "{database}", "{schema}", "{table}":
		default:
			return topicTemplate{}, fmt.Errorf("option topic: %q uses %s; known placeholders are {database}, {schema}, {table}", s, ph)
		}
		parts = append(parts, ph)
		rest = rest[i+j+1:]
	}
	return topicTemplate{parts: parts, names: &tableCache[string]{}}, nil
}

// expand is the topic of tbl's records.
func (t topicTemplate) expand(tbl *change.Table) string {
	if len(t.parts) == 1 && t.overrides == nil {
		return t.parts[0]
	}
	if t.names == nil {
		return t.render(tbl)
	}
	name, _ := t.names.Get(tbl, func(tbl *change.Table) (string, error) { return t.render(tbl), nil })
	return name
}

func (t topicTemplate) render(tbl *change.Table) string {
	if over, ok := t.overrides[tbl.QualifiedName()]; ok {
		return over.render(tbl)
	}
	if len(t.parts) == 1 {
		return t.parts[0]
	}
	var sb strings.Builder
	for _, p := range t.parts {
		switch p {
		case "{database}":
			writeTopicPart(&sb, tbl.Database)
		case "{schema}":
			writeTopicPart(&sb, tbl.Schema)
		case "{table}":
			writeTopicPart(&sb, tbl.Name)
		default:
			sb.WriteString(p)
		}
	}
	return sb.String()
}

// writeTopicPart writes a name into a topic, replacing each character Kafka does not allow in topic
// names (anything but ASCII letters, digits, '.', '_' and '-') with '_'.
func writeTopicPart(sb *strings.Builder, name string) {
	for _, r := range name {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' {
			sb.WriteRune(r)
		} else {
			sb.WriteByte('_')
		}
	}
}
