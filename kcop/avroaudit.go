package kcop

import (
	"context"
	"fmt"
	"strings"

	"github.com/linkedin/goavro/v2"

	"github.com/cdcd-dev/cdcd/change"
)

func init() {
	for _, name := range []string{"avro-audit", "avro-audit-rows"} {
		Register(name, func(opts Options) (KCOP, error) { return newAvroAudit(opts, name == "avro-audit-rows") })
		Document(name,
			OptionDoc{"registry_url", "string", "", "the Confluent-compatible schema registry, e.g. http://registry:8081 (Apicurio: .../apis/ccompat/v7)"},
			topicDoc, topicsDoc,
			OptionDoc{"timeout", "duration", "10s", "bound of each registry request; a registry that does not answer is retried"},
			OptionDoc{"compatibility", "string", "BACKWARD", "the compatibility level cdcd sets on its subjects, or registry to leave the registry's setting"})
	}
}

// AvroAudit is IBM's Avro audit formats, in Confluent's wire format through a schema registry like
// the avro KCOP. Every record carries the audit fields of json-audit:
//
//	AUD_OP        c, u, d, r (snapshot) or t (truncate)
//	AUD_TS        the commit time, UTC, ISO 8601 with milliseconds (null when the source gave none)
//	AUD_TXID      the source transaction id
//	AUD_POS       the transaction's position in the source log
//	AUD_TABLE     schema.table
//	AUD_OP_INDEX  the change's index in its transaction
//	AUD_UNSENT    the columns whose value the source did not send (written as null)
//
// avro-audit is the single-row format: one record per change with the images as the nullable
// records beforeImage and afterImage (an insert has no beforeImage, a delete no afterImage).
// avro-audit-rows is the multi-row format: one record per image, the audit fields plus AUD_IMAGE
// (before or after) and the row's columns, so an update is a before record followed by an after
// record (when the source sent the before image: REPLICA IDENTITY FULL in PostgreSQL; otherwise an
// update has its after record only). A truncate is one record with no image. The key is the avro KCOP's key record (none for a
// truncate); deletes are records like any other, not tombstones: the topic is the audit trail.
type AvroAudit struct {
	topic    topicTemplate
	registry *schemaRegistry
	multiRow bool
	tables   tableCache[*avroAuditTable]
}

type avroAuditTable struct {
	topic   string
	key     *avroRecord // nil for a table without a key
	value   *goavro.Codec
	valueID uint32
	columns []avroField // the image's fields, every column in order
	all     []int
}

var avroAuditFields = []any{
	map[string]any{"name": "AUD_OP", "type": "string"},
	map[string]any{"name": "AUD_TS", "type": []any{"null", "string"}, "default": nil},
	map[string]any{"name": "AUD_TXID", "type": "string"},
	map[string]any{"name": "AUD_POS", "type": "string"},
	map[string]any{"name": "AUD_TABLE", "type": "string"},
	map[string]any{"name": "AUD_OP_INDEX", "type": "long"},
	map[string]any{"name": "AUD_UNSENT", "type": map[string]any{"type": "array", "items": "string"}, "default": []any{}},
}

func newAvroAudit(opts Options, multiRow bool) (KCOP, error) {
	o := defaultAvroOptions()
	if err := opts.Decode(&o); err != nil {
		return nil, err
	}
	registry, topic, err := o.open()
	if err != nil {
		return nil, err
	}
	return &AvroAudit{topic: topic, registry: registry, multiRow: multiRow}, nil
}

// Check implements Checker: the registry answers.
func (a *AvroAudit) Check(ctx context.Context) error { return a.registry.check(ctx) }

func (a *AvroAudit) table(ctx context.Context, t *change.Table) (*avroAuditTable, error) {
	return a.tables.Get(t, func(t *change.Table) (*avroAuditTable, error) {
		at := &avroAuditTable{topic: a.topic.expand(t)}
		for i := range t.Columns {
			at.all = append(at.all, i)
		}
		columns, schema, err := avroColumns(t, at.all, true)
		if err != nil {
			return nil, err
		}
		at.columns = columns
		// The audit fields are looked for in a refused version, not compared.
		var known []avroField
		fields := append([]any(nil), avroAuditFields...)
		for _, f := range avroAuditFields {
			name := f.(map[string]any)["name"].(string)
			known = append(known, avroField{name: name, column: name})
		}
		name := avroName(t.Name) + "_audit"
		if a.multiRow {
			known = append(known, avroField{name: "AUD_IMAGE", column: "AUD_IMAGE"})
			fields = append(fields, map[string]any{"name": "AUD_IMAGE", "type": []any{"null", "string"}, "default": nil})
			for _, c := range columns {
				if strings.HasPrefix(c.name, "AUD_") {
					return nil, fmt.Errorf("avro-audit-rows: column %s of %s collides with the audit fields; use avro-audit, whose images are records of their own", c.column, t.QualifiedName())
				}
			}
			fields = append(fields, schema...)
		} else {
			name := avroName(t.Name) + "_image"
			fields = append(fields,
				map[string]any{"name": "beforeImage", "type": []any{"null", map[string]any{"type": "record", "name": name, "fields": schema}}, "default": nil},
				map[string]any{"name": "afterImage", "type": []any{"null", name}, "default": nil})
		}
		known = append(known, columns...)
		if at.value, at.valueID, err = registerSchema(ctx, a.registry, t, at.topic+"-value",
			map[string]any{"type": "record", "name": name, "namespace": avroNamespace(t), "fields": fields}, known); err != nil {
			return nil, err
		}
		if at.key, err = a.registry.keyRecord(ctx, t, at.topic); err != nil {
			return nil, err
		}
		return at, nil
	})
}

// Process implements KCOP.
func (a *AvroAudit) Process(ctx context.Context, c *change.Change, dst []Record) ([]Record, error) {
	at, err := a.table(ctx, c.Table)
	if err != nil {
		return dst, err
	}
	// The key of an image's row: a multi-row update that moves the row keys its before record by the
	// old key; the single-row record goes by the row's new key.
	keyOf := func(row change.Row) ([]byte, error) {
		if at.key == nil || row == nil {
			return nil, nil
		}
		return at.key.encode(c.Table, row, c.Table.KeyIndexes)
	}
	row := c.After
	if row == nil {
		row = c.Before
	}
	key, err := keyOf(row)
	if err != nil {
		return dst, err
	}
	audit := func(unsent []string) map[string]any {
		ts := any(nil)
		if !c.Txn.CommitTime.IsZero() {
			ts = goavro.Union("string", c.Txn.CommitTime.UTC().Format("2006-01-02T15:04:05.000Z07:00"))
		}
		if unsent == nil {
			unsent = []string{}
		}
		return map[string]any{"AUD_OP": c.Op.String(), "AUD_TS": ts, "AUD_TXID": c.Txn.ID, "AUD_POS": c.Txn.Position,
			"AUD_TABLE": c.Table.QualifiedName(), "AUD_OP_INDEX": c.Index, "AUD_UNSENT": unsent}
	}
	emit := func(native map[string]any) error {
		v, err := confluentEncode(at.value, at.valueID, native)
		if err != nil {
			return fmt.Errorf("avro-audit: %s: %w", c.Table.QualifiedName(), err)
		}
		dst = append(dst, Record{Topic: at.topic, Partition: PartitionByKey, Key: key, Value: v})
		return nil
	}
	image := func(row change.Row, unsent *[]string) (map[string]any, error) {
		if row == nil {
			return nil, nil
		}
		return avroNativeRow(c.Table, row, at.all, at.columns, unsent)
	}
	if !a.multiRow {
		var unsent []string
		before, err := image(c.Before, &unsent)
		if err != nil {
			return dst, err
		}
		after, err := image(c.After, &unsent)
		if err != nil {
			return dst, err
		}
		native := audit(unsent)
		native["beforeImage"], native["afterImage"] = nil, nil
		name := avroNamespace(c.Table) + "." + avroName(c.Table.Name) + "_image"
		if before != nil {
			native["beforeImage"] = goavro.Union(name, before)
		}
		if after != nil {
			native["afterImage"] = goavro.Union(name, after)
		}
		return dst, emit(native)
	}
	if c.Before == nil && c.After == nil {
		native := audit(nil)
		native["AUD_IMAGE"] = nil
		for _, f := range at.columns {
			native[f.name] = nil
		}
		return dst, emit(native)
	}
	for _, img := range []struct {
		row  change.Row
		name string
	}{{c.Before, "before"}, {c.After, "after"}} {
		if img.row == nil {
			continue
		}
		var unsent []string
		native, err := image(img.row, &unsent)
		if err != nil {
			return dst, err
		}
		for k, v := range audit(unsent) {
			native[k] = v
		}
		native["AUD_IMAGE"] = goavro.Union("string", img.name)
		if key, err = keyOf(img.row); err != nil {
			return dst, err
		}
		if err := emit(native); err != nil {
			return dst, err
		}
	}
	return dst, nil
}
