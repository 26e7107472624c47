package kcop

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/linkedin/goavro/v2"

	"github.com/cdcd-dev/cdcd/change"
)

func init() {
	Register("avro", NewAvro)
	Document("avro",
		OptionDoc{"registry_url", "string", "", "the Confluent-compatible schema registry, e.g. http://registry:8081 (Apicurio: .../apis/ccompat/v7)"},
		OptionDoc{"topic", "string", jsonDefaultTopic, "the topic of each table's records; {database}, {schema} and {table} are replaced"},
		OptionDoc{"deletes", "string", "tombstone", "a delete as a tombstone (the key, no value) or as row (the deleted row as the value)"},
		OptionDoc{"timeout", "duration", "10s", "bound of each registry request; a registry that does not answer is retried"})
}

// Avro is IBM's default KCOP: Confluent's wire format (a zero byte, the schema id in four bytes, the
// Avro binary) with the schemas registered in a schema registry under the topic's subjects
// (<topic>-key, <topic>-value):
//
//	key:   a record of the key columns
//	value: a record of every column, the after image (inserts, updates, snapshot rows)
//
// A delete is a tombstone (or, with deletes: row, the deleted row as the value); an update that
// changes the key writes the old key's delete first. TRUNCATE writes nothing. Column types map to
// Avro by the source's type names: integers to long (BIGINT UNSIGNED to string), FLOAT/float4 to
// float, DOUBLE/float8 to double, booleans to boolean, binary types to bytes, and every other type
// to a string holding its exact text form (decimals, dates and times in ISO 8601, timestamps with
// a zone in UTC, JSON documents); value fields are nullable. A value the source did not send (an
// unchanged TOAST value) cannot be written in Avro: it stops cdcd with the fix (REPLICA IDENTITY
// FULL). A table whose columns change gets a new schema version; a version the registry refuses is
// a terminal error naming the table.
type Avro struct {
	topic    topicTemplate
	registry *schemaRegistry
	rowDel   bool
	tables   tableCache[*avroTable]
}

type avroTable struct {
	topic    string
	key      *avroRecord // nil for a table without a key
	value    *avroRecord
	keyIdx   []int
	valueIdx []int
}

type avroRecord struct {
	codec  *goavro.Codec
	id     uint32
	fields []avroField
}

type avroField struct {
	name, column string
	typ          string // long, string, float, double, boolean or bytes
	nullable     bool
}

// NewAvro is the Factory of the avro KCOP.
func NewAvro(opts Options) (KCOP, error) {
	o := struct {
		RegistryURL string        `mapstructure:"registry_url"`
		Topic       string        `mapstructure:"topic"`
		Deletes     string        `mapstructure:"deletes"`
		Timeout     time.Duration `mapstructure:"timeout"`
	}{Topic: jsonDefaultTopic, Deletes: "tombstone", Timeout: 10 * time.Second}
	if err := opts.Decode(&o); err != nil {
		return nil, err
	}
	if o.RegistryURL == "" {
		return nil, fmt.Errorf("option registry_url is empty; name the schema registry, e.g. http://127.0.0.1:8081")
	}
	if o.Deletes != "tombstone" && o.Deletes != "row" {
		return nil, fmt.Errorf("option deletes %q is not one of tombstone, row", o.Deletes)
	}
	topic, err := parseTopicTemplate(o.Topic)
	if err != nil {
		return nil, err
	}
	return &Avro{topic: topic, rowDel: o.Deletes == "row",
		registry: &schemaRegistry{base: strings.TrimSuffix(o.RegistryURL, "/"), client: &http.Client{Timeout: o.Timeout}, ids: map[string]uint32{}}}, nil
}

// avroTypeOf maps a source type name to an Avro type.
func avroTypeOf(sourceType string) string {
	t := strings.ToLower(sourceType)
	switch {
	case t == "bigint unsigned":
		return "string"
	case t == "int2" || t == "int4" || t == "int8" || t == "year" || strings.HasPrefix(t, "tinyint") || strings.HasPrefix(t, "smallint") ||
		strings.HasPrefix(t, "mediumint") || strings.HasPrefix(t, "int ") || t == "int" || t == "bigint" || t == "integer":
		return "long"
	case t == "float8" || t == "double" || strings.HasPrefix(t, "double "):
		return "double"
	case t == "float4" || strings.HasPrefix(t, "float"):
		return "float"
	case t == "bool" || t == "boolean":
		return "boolean"
	case t == "bytea" || t == "blob" || t == "binary" || t == "varbinary" || t == "geometry":
		return "bytes"
	}
	return "string"
}

// avroName makes a column or table name a valid Avro name: letters, digits and underscores, not
// starting with a digit.
func avroName(s string) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z':
			b.WriteRune(r)
		case r >= '0' && r <= '9':
			if i == 0 {
				b.WriteByte('_')
			}
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return "_"
	}
	return b.String()
}

func (a *Avro) record(ctx context.Context, t *change.Table, subject, name string, idx []int, nullable bool) (*avroRecord, error) {
	rec := &avroRecord{}
	var fields []map[string]any
	seen := map[string]bool{}
	for _, i := range idx {
		col := t.Columns[i]
		f := avroField{name: avroName(col.Name), column: col.Name, typ: avroTypeOf(col.Type), nullable: nullable}
		if seen[f.name] {
			return nil, fmt.Errorf("avro: columns of %s map to the same Avro field name %s; rename one", t.QualifiedName(), f.name)
		}
		seen[f.name] = true
		field := map[string]any{"name": f.name, "type": f.typ}
		if nullable {
			field["type"], field["default"] = []any{"null", f.typ}, nil
		}
		fields = append(fields, field)
		rec.fields = append(rec.fields, f)
	}
	schema, err := json.Marshal(map[string]any{"type": "record", "name": name,
		"namespace": avroName(t.Database) + "." + avroName(t.Schema), "fields": fields})
	if err != nil {
		return nil, err
	}
	if rec.codec, err = goavro.NewCodec(string(schema)); err != nil {
		return nil, fmt.Errorf("avro: the schema of %s: %w", t.QualifiedName(), err)
	}
	if rec.id, err = a.registry.register(ctx, subject, string(schema)); err != nil {
		return nil, fmt.Errorf("avro: registering the schema of %s under %s: %w", t.QualifiedName(), subject, err)
	}
	return rec, nil
}

func (a *Avro) table(ctx context.Context, t *change.Table) (*avroTable, error) {
	return a.tables.get(t, func(t *change.Table) (*avroTable, error) {
		at := &avroTable{topic: a.topic.expand(t), keyIdx: t.KeyIndexes}
		for i := range t.Columns {
			at.valueIdx = append(at.valueIdx, i)
		}
		var err error
		if len(t.KeyIndexes) > 0 {
			if at.key, err = a.record(ctx, t, at.topic+"-key", avroName(t.Name)+"_key", t.KeyIndexes, false); err != nil {
				return nil, err
			}
		}
		if at.value, err = a.record(ctx, t, at.topic+"-value", avroName(t.Name), at.valueIdx, true); err != nil {
			return nil, err
		}
		return at, nil
	})
}

// encode writes row's columns idx in Confluent's wire format.
func (r *avroRecord) encode(t *change.Table, row change.Row, idx []int) ([]byte, error) {
	native := make(map[string]any, len(idx))
	for n, i := range idx {
		f := r.fields[n]
		v := row[i]
		switch v.Kind {
		case change.Unchanged, change.Absent:
			return nil, fmt.Errorf("avro: column %s of %s was not sent by the source (an unchanged TOAST value), which an Avro record cannot leave out; set REPLICA IDENTITY FULL on the table", f.column, t.QualifiedName())
		case change.Null:
			if !f.nullable {
				return nil, fmt.Errorf("avro: key column %s of %s is NULL", f.column, t.QualifiedName())
			}
			native[f.name] = nil
			continue
		}
		x, err := avroNative(f.typ, v.V)
		if err != nil {
			return nil, fmt.Errorf("avro: column %s of %s: %w", f.column, t.QualifiedName(), err)
		}
		if f.nullable {
			x = goavro.Union(f.typ, x)
		}
		native[f.name] = x
	}
	out := make([]byte, 5, 64)
	binary.BigEndian.PutUint32(out[1:], r.id)
	return r.codec.BinaryFromNative(out, native)
}

func avroNative(typ string, v any) (any, error) {
	switch typ {
	case "long":
		if x, ok := v.(int64); ok {
			return x, nil
		}
	case "float":
		if x, ok := v.(float32); ok {
			return x, nil
		}
	case "double":
		if x, ok := v.(float64); ok {
			return x, nil
		}
	case "boolean":
		if x, ok := v.(bool); ok {
			return x, nil
		}
	case "bytes":
		if x, ok := v.([]byte); ok {
			return x, nil
		}
	case "string":
		if renderable(v) {
			return csvText(v), nil
		}
	}
	return nil, fmt.Errorf("a value of Go type %T for an Avro %s", v, typ)
}

// Process implements KCOP.
func (a *Avro) Process(ctx context.Context, c *change.Change, dst []Record) ([]Record, error) {
	if c.Op == change.Truncate {
		return dst, nil
	}
	at, err := a.table(ctx, c.Table)
	if err != nil {
		return dst, err
	}
	key := func(row change.Row) ([]byte, error) {
		if at.key == nil {
			return nil, nil
		}
		return at.key.encode(c.Table, row, at.keyIdx)
	}
	deleted := func(row change.Row) error {
		k, err := key(row)
		if err != nil {
			return err
		}
		var v []byte
		if a.rowDel {
			if v, err = at.value.encode(c.Table, row, at.valueIdx); err != nil {
				return err
			}
		}
		dst = append(dst, Record{Topic: at.topic, Partition: PartitionByKey, Key: k, Value: v})
		return nil
	}
	switch c.Op {
	case change.Delete:
		if err := deleted(c.Before); err != nil {
			return dst, err
		}
		return dst, nil
	case change.Update:
		if c.KeyChanged {
			if err := deleted(c.Before); err != nil {
				return dst, err
			}
		}
	}
	k, err := key(c.After)
	if err != nil {
		return dst, err
	}
	v, err := at.value.encode(c.Table, c.After, at.valueIdx)
	if err != nil {
		return dst, err
	}
	return append(dst, Record{Topic: at.topic, Partition: PartitionByKey, Key: k, Value: v}), nil
}

// schemaRegistry registers schemas with a Confluent-compatible schema registry.
type schemaRegistry struct {
	base   string
	client *http.Client
	mu     sync.Mutex
	ids    map[string]uint32 // subject + schema → id
}

// register returns the schema's id under subject, registering it when it is new. A registry that
// cannot be reached, times out or fails on its side is a Retryable error; a refusal is not.
func (r *schemaRegistry) register(ctx context.Context, subject, schema string) (uint32, error) {
	r.mu.Lock()
	id, ok := r.ids[subject+"\x00"+schema]
	r.mu.Unlock()
	if ok {
		return id, nil
	}
	body, _ := json.Marshal(map[string]string{"schema": schema})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.base+"/subjects/"+subject+"/versions", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	resp, err := r.client.Do(req)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) {
			return 0, Retryable(fmt.Errorf("the schema registry at %s: %w", r.base, err))
		}
		return 0, Retryable(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return 0, Retryable(fmt.Errorf("the schema registry at %s answered %s: %s", r.base, resp.Status, data))
	case resp.StatusCode/100 != 2:
		return 0, fmt.Errorf("the schema registry at %s refused it (%s): %s; check the subject's compatibility setting", r.base, resp.Status, data)
	}
	var out struct {
		ID uint32 `json:"id"`
	}
	if err := json.Unmarshal(data, &out); err != nil || out.ID == 0 {
		return 0, fmt.Errorf("the schema registry at %s answered %q, not an id", r.base, data)
	}
	r.mu.Lock()
	r.ids[subject+"\x00"+schema] = out.ID
	r.mu.Unlock()
	return out.ID, nil
}
