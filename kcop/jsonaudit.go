package kcop

import (
	"context"
	"fmt"
	"strconv"

	"github.com/cdcd-dev/cdcd/change"
)

func init() {
	Register("json-audit", NewJSONAudit)
	Document("json-audit",
		topicDoc, topicsDoc,
		OptionDoc{"before_prefix", "string", "B_", "the prefix of the before image's columns"})
}

// JSONAudit is IBM's single-row JSON audit format: one flat JSON object per change, the audit fields,
// the after image's columns under their names, and the before image's columns under a prefix:
//
//	{"AUD_OP": "u", "AUD_TS": "2026-11-30T08:08:07.654Z", "AUD_TXID": "771", "AUD_POS": "0/16B3748",
//	 "AUD_TABLE": "public.people", "id": 1, "name": "Bob", "B_id": 1, "B_name": "Robert"}
//
// A column of an image the change lacks is left out (an insert has no B_ columns); SQL NULL is
// null; a value the source did not send is left out and named in AUD_UNSENT. Values are rendered as
// by the json KCOP. The key is the json KCOP's key; deletes write no tombstone (the record is the
// audit trail).
type JSONAudit struct {
	shapes *tableShapes
	prefix string
}

// NewJSONAudit is the Factory of the json-audit KCOP.
func NewJSONAudit(opts Options) (KCOP, error) {
	o := struct {
		topicOptions `mapstructure:",squash"`
		BeforePrefix string `mapstructure:"before_prefix"`
	}{topicOptions: defaultTopicOptions(), BeforePrefix: "B_"}
	if err := opts.Decode(&o); err != nil {
		return nil, err
	}
	if o.BeforePrefix == "" {
		return nil, fmt.Errorf("option before_prefix is empty: the before image's columns would collide with the after image's")
	}
	topic, err := o.route()
	if err != nil {
		return nil, err
	}
	return &JSONAudit{shapes: newTableShapes(topic), prefix: o.BeforePrefix}, nil
}

// Process implements KCOP.
func (k *JSONAudit) Process(_ context.Context, c *change.Change, dst []Record) ([]Record, error) {
	for _, row := range []change.Row{c.Before, c.After} {
		if err := checkRenderable(c.Table, row); err != nil {
			return dst, err
		}
	}
	b := []byte(`{"AUD_OP":`)
	b = appendString(b, c.Op.String())
	b = append(b, `,"AUD_TS":`...)
	if c.Txn.CommitTime.IsZero() {
		b = append(b, "null"...)
	} else {
		b = appendString(b, c.Txn.CommitTime.UTC().Format("2006-01-02T15:04:05.000Z07:00"))
	}
	b = append(b, `,"AUD_TXID":`...)
	b = appendString(b, c.Txn.ID)
	b = append(b, `,"AUD_POS":`...)
	b = appendString(b, c.Txn.Position)
	b = append(b, `,"AUD_TABLE":`...)
	b = appendString(b, c.Table.QualifiedName())
	b = append(b, `,"AUD_OP_INDEX":`...)
	b = strconv.AppendInt(b, c.Index, 10)
	var unsent []string
	image := func(row change.Row, prefix string) {
		for i, v := range row {
			name := prefix + c.Table.Columns[i].Name
			if v.Kind == change.Unchanged || v.Kind == change.Absent {
				unsent = append(unsent, name)
				continue
			}
			b = append(b, ',')
			b = appendString(b, name)
			b = append(b, ':')
			b, _ = appendValue(b, v) // checked above
		}
	}
	image(c.After, "")
	image(c.Before, k.prefix)
	if len(unsent) > 0 {
		b = append(b, `,"AUD_UNSENT":[`...)
		for i, n := range unsent {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, n)
		}
		b = append(b, ']')
	}
	b = append(b, '}')
	row := c.After
	if row == nil {
		row = c.Before
	}
	sh := k.shapes.of(c.Table)
	return append(dst, Record{Topic: sh.topic, Partition: PartitionByKey, Key: appendKey(nil, c.Table, sh.fields, row), Value: b}), nil
}
