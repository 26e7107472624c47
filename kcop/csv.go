package kcop

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/cdcd-dev/cdcd/change"
)

func init() {
	Register("csv-audit", NewCSVAudit)
	Document("csv-audit",
		topicDoc, topicsDoc,
		OptionDoc{"delimiter", "string", ",", "the field delimiter, one character"},
		OptionDoc{"null", "string", `\N`, "written for SQL NULL and for every column of an image the change lacks (an insert's before image)"},
		OptionDoc{"unsent", "string", `\U`, "written for a value the source did not send (an unchanged TOAST value, a column missing from a key-only before image); never written as NULL"})
}

// CSVAudit is the live audit, single row, CSV format: one delimited line per change, readable by a
// standard CSV reader (RFC 4180 quoting, no header line):
//
//	op, commit timestamp, user, transaction id, before image columns..., after image columns...
//
// op is c, u, d, r (snapshot) or t; the commit timestamp is RFC 3339 in UTC with milliseconds (empty
// for snapshot rows); user is always the null marker, since neither pgoutput nor the binlog names the
// user who made a change. Each image has one field per column of the table, in column order: the
// null marker for SQL NULL and for an image the change lacks, the unsent marker for a value the source
// did not send. Values are their text forms as in the json KCOP (numbers exact, binary as hex,
// timestamps with a zone in UTC, intervals ISO 8601, arrays and JSON documents as JSON text). The
// record key is the json KCOP's key. A text value equal to a marker cannot be told from it: choose
// markers your data never holds.
type CSVAudit struct {
	shapes    *tableShapes
	delimiter rune
	null      string
	unsent    string
}

// NewCSVAudit is the Factory of the csv-audit KCOP.
func NewCSVAudit(opts Options) (KCOP, error) {
	o := struct {
		topicOptions `mapstructure:",squash"`
		Delimiter    string `mapstructure:"delimiter"`
		Null         string `mapstructure:"null"`
		Unsent       string `mapstructure:"unsent"`
	}{topicOptions: defaultTopicOptions(), Delimiter: ",", Null: `\N`, Unsent: `\U`}
	if err := opts.Decode(&o); err != nil {
		return nil, err
	}
	topic, err := o.route()
	if err != nil {
		return nil, err
	}
	d, n := utf8.DecodeRuneInString(o.Delimiter)
	if n == 0 || n != len(o.Delimiter) || d == '"' || d == '\r' || d == '\n' || d == utf8.RuneError {
		return nil, fmt.Errorf("option delimiter %q: want one character other than a quote or a line break", o.Delimiter)
	}
	if o.Null == o.Unsent {
		return nil, fmt.Errorf("options null and unsent are both %q: a reader could not tell NULL from a value that was not sent", o.Null)
	}
	return &CSVAudit{shapes: newTableShapes(topic), delimiter: d, null: o.Null, unsent: o.Unsent}, nil
}

// Process implements KCOP.
func (k *CSVAudit) Process(_ context.Context, c *change.Change, dst []Record) ([]Record, error) {
	for _, row := range []change.Row{c.Before, c.After} {
		if err := checkRenderable(c.Table, row); err != nil {
			return dst, err
		}
	}
	fields := make([]string, 0, 4+2*len(c.Table.Columns))
	ts := ""
	if !c.Txn.CommitTime.IsZero() {
		ts = c.Txn.CommitTime.UTC().Format("2006-01-02T15:04:05.000Z07:00")
	}
	fields = append(fields, c.Op.String(), ts, k.null, c.Txn.ID)
	fields = k.appendImage(fields, c.Table, c.Before)
	fields = k.appendImage(fields, c.Table, c.After)
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.Comma = k.delimiter
	if err := w.Write(fields); err != nil {
		return dst, fmt.Errorf("csv-audit: %w", err)
	}
	w.Flush()
	line := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	row := c.After
	if row == nil {
		row = c.Before
	}
	sh := k.shapes.of(c.Table)
	return append(dst, Record{Topic: sh.topic, Partition: PartitionByKey, Key: appendKey(nil, c.Table, sh.fields, row), Value: line}), nil
}

func (k *CSVAudit) appendImage(fields []string, t *change.Table, row change.Row) []string {
	for i := range t.Columns {
		if row == nil {
			fields = append(fields, k.null)
			continue
		}
		switch v := row[i]; v.Kind {
		case change.Null:
			fields = append(fields, k.null)
		case change.Unchanged, change.Absent:
			fields = append(fields, k.unsent)
		default:
			fields = append(fields, csvText(v.V))
		}
	}
	return fields
}

// csvText is a value's text form in a CSV field.
func csvText(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	case uint64:
		return strconv.FormatUint(x, 10)
	case float32:
		return csvFloat(float64(x), 32)
	case float64:
		return csvFloat(x, 64)
	case bool:
		return strconv.FormatBool(x)
	case []byte:
		return hex.EncodeToString(x)
	case time.Time:
		return string(appendInstant(nil, x))
	case change.Interval:
		return isoInterval(x)
	}
	if s, ok := textOf(v); ok {
		return s
	}
	b, _ := appendAny(nil, v) // arrays, as JSON; Process checked every value is renderable
	return string(b)
}

// textOf is the text of the change types that are text already (decimals, JSON, dates, times, text
// forms).
func textOf(v any) (string, bool) {
	switch x := v.(type) {
	case change.Decimal:
		return string(x), true
	case change.JSON:
		return string(x), true
	case change.Date:
		return string(x), true
	case change.Time:
		return string(x), true
	case change.TimeTZ:
		return string(x), true
	case change.Timestamp:
		return string(x), true
	case change.Text:
		return string(x), true
	}
	return "", false
}

// csvFloat spells the infinities as the json KCOP does.
func csvFloat(f float64, bits int) string {
	switch {
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	return strconv.FormatFloat(f, 'g', -1, bits)
}
