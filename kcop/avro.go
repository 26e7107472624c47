package kcop

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
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
		topicDoc, topicsDoc,
		OptionDoc{"deletes", "string", "tombstone", "a delete as a tombstone (the key, no value) or as row (the deleted row as the value)"},
		OptionDoc{"timeout", "duration", "10s", "bound of each registry request; a registry that does not answer is retried"},
		OptionDoc{"compatibility", "string", "BACKWARD", "the compatibility level cdcd sets on its subjects (BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE, NONE), or registry to leave the registry's setting"})
}

// avroCompatibilityLevels are the levels of Confluent's schema registry API.
var avroCompatibilityLevels = []string{"BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE", "NONE"}

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
// FULL).
//
// A table whose columns change gets a new schema version under the same subjects. cdcd sets its
// subjects to BACKWARD compatibility unless told otherwise: a consumer that has the newest schema
// must still read every older record a topic keeps (a compacted topic keeps them for ever), and
// that is what BACKWARD checks. Value fields are nullable with a null default, so added and dropped
// columns pass; a column whose Avro type changes (int to text) does not, nor does a new key column.
// A version the registry refuses stops cdcd with an error naming the table and the columns that
// differ from the registered version, never a retry loop.
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

// avroCommonOptions are the options of every KCOP writing through the schema registry.
type avroCommonOptions struct {
	topicOptions `mapstructure:",squash"`
	RegistryURL  string        `mapstructure:"registry_url"`
	Timeout      time.Duration `mapstructure:"timeout"`
	Compat       string        `mapstructure:"compatibility"`
}

func defaultAvroOptions() avroCommonOptions {
	return avroCommonOptions{topicOptions: defaultTopicOptions(), Timeout: 10 * time.Second, Compat: "BACKWARD"}
}

// open checks the options and makes the registry client and the topic template.
func (o avroCommonOptions) open() (*schemaRegistry, topicTemplate, error) {
	if o.RegistryURL == "" {
		return nil, topicTemplate{}, fmt.Errorf("option registry_url is empty; name the schema registry, e.g. http://127.0.0.1:8081")
	}
	compat := strings.ToUpper(o.Compat)
	if compat == "REGISTRY" {
		compat = ""
	} else if !slices.Contains(avroCompatibilityLevels, compat) {
		return nil, topicTemplate{}, fmt.Errorf("option compatibility %q is not one of %s, registry", o.Compat, strings.Join(avroCompatibilityLevels, ", "))
	}
	topic, err := o.route()
	if err != nil {
		return nil, topicTemplate{}, err
	}
	return &schemaRegistry{base: strings.TrimSuffix(o.RegistryURL, "/"), client: &http.Client{Timeout: o.Timeout}, compat: compat,
		ids: map[string]uint32{}, configured: map[string]bool{}}, topic, nil
}

// NewAvro is the Factory of the avro KCOP.
func NewAvro(opts Options) (KCOP, error) {
	o := struct {
		avroCommonOptions `mapstructure:",squash"`
		Deletes           string `mapstructure:"deletes"`
	}{avroCommonOptions: defaultAvroOptions(), Deletes: "tombstone"}
	if err := opts.Decode(&o); err != nil {
		return nil, err
	}
	if o.Deletes != "tombstone" && o.Deletes != "row" {
		return nil, fmt.Errorf("option deletes %q is not one of tombstone, row", o.Deletes)
	}
	registry, topic, err := o.open()
	if err != nil {
		return nil, err
	}
	return &Avro{topic: topic, rowDel: o.Deletes == "row", registry: registry}, nil
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

// avroColumns maps the columns idx of t to Avro fields, and their schema entries.
func avroColumns(t *change.Table, idx []int, nullable bool) ([]avroField, []any, error) {
	var fields []avroField
	var schema []any
	seen := map[string]bool{}
	for _, i := range idx {
		col := t.Columns[i]
		f := avroField{name: avroName(col.Name), column: col.Name, typ: avroTypeOf(col.Type), nullable: nullable}
		if seen[f.name] {
			return nil, nil, fmt.Errorf("avro: columns of %s map to the same Avro field name %s; rename one", t.QualifiedName(), f.name)
		}
		seen[f.name] = true
		field := map[string]any{"name": f.name, "type": f.typ}
		if nullable {
			field["type"], field["default"] = []any{"null", f.typ}, nil
		}
		schema = append(schema, field)
		fields = append(fields, f)
	}
	return fields, schema, nil
}

// avroNamespace is the Avro namespace of t's records.
func avroNamespace(t *change.Table) string { return avroName(t.Database) + "." + avroName(t.Schema) }

// registerSchema compiles schema and registers it under subject; fields name the columns it holds,
// for the error of a refused version.
func registerSchema(ctx context.Context, r *schemaRegistry, t *change.Table, subject string, schema map[string]any, fields []avroField) (*goavro.Codec, uint32, error) {
	text, err := json.Marshal(schema)
	if err != nil {
		return nil, 0, err
	}
	codec, err := goavro.NewCodec(string(text))
	if err != nil {
		return nil, 0, fmt.Errorf("avro: the schema of %s: %w", t.QualifiedName(), err)
	}
	id, err := r.register(ctx, subject, string(text))
	if err != nil {
		if errors.Is(err, errSchemaRefused) {
			err = fmt.Errorf("%w%s", err, r.differences(ctx, subject, fields))
		}
		return nil, 0, fmt.Errorf("avro: registering the schema of %s under %s: %w", t.QualifiedName(), subject, err)
	}
	return codec, id, nil
}

// record registers under subject the record schema of t's columns idx.
func (r *schemaRegistry) record(ctx context.Context, t *change.Table, subject, name string, idx []int, nullable bool) (*avroRecord, error) {
	fields, schema, err := avroColumns(t, idx, nullable)
	if err != nil {
		return nil, err
	}
	rec := &avroRecord{fields: fields}
	rec.codec, rec.id, err = registerSchema(ctx, r, t, subject,
		map[string]any{"type": "record", "name": name, "namespace": avroNamespace(t), "fields": schema}, fields)
	if err != nil {
		return nil, err
	}
	return rec, nil
}

// keyRecord registers the key schema of t's records in topic: nil for a table without a key.
func (r *schemaRegistry) keyRecord(ctx context.Context, t *change.Table, topic string) (*avroRecord, error) {
	if len(t.KeyIndexes) == 0 {
		return nil, nil
	}
	return r.record(ctx, t, topic+"-key", avroName(t.Name)+"_key", t.KeyIndexes, false)
}

func (a *Avro) table(ctx context.Context, t *change.Table) (*avroTable, error) {
	return a.tables.Get(t, func(t *change.Table) (*avroTable, error) {
		at := &avroTable{topic: a.topic.expand(t), keyIdx: t.KeyIndexes}
		for i := range t.Columns {
			at.valueIdx = append(at.valueIdx, i)
		}
		var err error
		if at.key, err = a.registry.keyRecord(ctx, t, at.topic); err != nil {
			return nil, err
		}
		if at.value, err = a.registry.record(ctx, t, at.topic+"-value", avroName(t.Name), at.valueIdx, true); err != nil {
			return nil, err
		}
		return at, nil
	})
}

// encode writes row's columns idx in Confluent's wire format.
func (r *avroRecord) encode(t *change.Table, row change.Row, idx []int) ([]byte, error) {
	native, err := avroNativeRow(t, row, idx, r.fields, nil)
	if err != nil {
		return nil, err
	}
	return confluentEncode(r.codec, r.id, native)
}

// confluentEncode writes native in Confluent's wire format: a zero byte, the schema id, the Avro
// binary.
func confluentEncode(codec *goavro.Codec, id uint32, native map[string]any) ([]byte, error) {
	out := make([]byte, 5, 64)
	binary.BigEndian.PutUint32(out[1:], id)
	return codec.BinaryFromNative(out, native)
}

// avroNativeRow is row's columns idx as goavro's native record. A value the source did not send is
// an error, unless unsent collects the names of such columns (which are then written as null).
func avroNativeRow(t *change.Table, row change.Row, idx []int, fields []avroField, unsent *[]string) (map[string]any, error) {
	native := make(map[string]any, len(idx))
	for n, i := range idx {
		f := fields[n]
		v := row[i]
		switch v.Kind {
		case change.Unchanged, change.Absent:
			if unsent == nil || !f.nullable {
				return nil, fmt.Errorf("avro: column %s of %s was not sent by the source (an unchanged TOAST value), which an Avro record cannot leave out; set REPLICA IDENTITY FULL on the table", f.column, t.QualifiedName())
			}
			*unsent = append(*unsent, f.column)
			native[f.name] = nil
			continue
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
	return native, nil
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

// Check implements Checker: the registry answers.
func (a *Avro) Check(ctx context.Context) error { return a.registry.check(ctx) }

// check asks the registry for its compatibility setting, which any Confluent-compatible registry
// serves.
func (r *schemaRegistry) check(ctx context.Context) error {
	status, data, err := r.do(ctx, http.MethodGet, "/config", nil)
	if err != nil {
		return fmt.Errorf("option registry_url: %w; start the registry or correct the URL", err)
	}
	if status != http.StatusOK {
		return fmt.Errorf("option registry_url: %s answered %d to GET /config (%s); is it a Confluent-compatible schema registry (Apicurio: .../apis/ccompat/v7)?", r.base, status, data)
	}
	return nil
}

// schemaRegistry registers schemas with a Confluent-compatible schema registry.
type schemaRegistry struct {
	base   string
	client *http.Client
	compat string // the level set on each subject before its first registration; "" leaves it
	mu     sync.Mutex
	ids    map[string]uint32 // subject + schema → id
	// configured holds the subjects whose compatibility level this process has set.
	configured map[string]bool
}

// errSchemaRefused marks a schema the registry refused as incompatible or invalid.
var errSchemaRefused = errors.New("the schema registry refused the new schema")

// do sends one request and reads the answer; failures to reach the registry, and its own failures,
// are Retryable.
func (r *schemaRegistry) do(ctx context.Context, method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, r.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	resp, err := r.client.Do(req)
	if err != nil {
		return 0, nil, Retryable(fmt.Errorf("the schema registry at %s: %w", r.base, err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, Retryable(fmt.Errorf("the schema registry at %s: %w", r.base, err))
	}
	if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
		return resp.StatusCode, data, Retryable(fmt.Errorf("the schema registry at %s answered %s: %s", r.base, resp.Status, data))
	}
	return resp.StatusCode, data, nil
}

// configure sets subject's compatibility level, once per process.
func (r *schemaRegistry) configure(ctx context.Context, subject string) error {
	r.mu.Lock()
	done := r.compat == "" || r.configured[subject]
	r.mu.Unlock()
	if done {
		return nil
	}
	status, data, err := r.do(ctx, http.MethodPut, "/config/"+subject, map[string]string{"compatibility": r.compat})
	if err != nil {
		return err
	}
	if status/100 != 2 {
		return fmt.Errorf("the schema registry at %s refused compatibility %s for subject %s (%d): %s; set the option compatibility to registry to leave the registry's setting", r.base, r.compat, subject, status, data)
	}
	r.mu.Lock()
	r.configured[subject] = true
	r.mu.Unlock()
	return nil
}

// differences describes how fields differ from the latest version registered under subject, for
// the error of a refused schema; it says nothing when that version cannot be read. Fields of nested
// records (the images of an audit record) count as columns too; a field with no typ is only looked
// for, not compared.
func (r *schemaRegistry) differences(ctx context.Context, subject string, fields []avroField) string {
	status, data, err := r.do(ctx, http.MethodGet, "/subjects/"+subject+"/versions/latest", nil)
	if err != nil || status != http.StatusOK {
		return ""
	}
	var latest struct {
		Version int    `json:"version"`
		Schema  string `json:"schema"`
	}
	var schema any
	if json.Unmarshal(data, &latest) != nil || json.Unmarshal([]byte(latest.Schema), &schema) != nil {
		return ""
	}
	old := map[string]string{}
	avroFieldTypes(schema, old)
	var diffs []string
	for _, f := range fields {
		was, ok := old[f.name]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("column %s is new (%s)", f.column, f.typ))
		case f.typ != "" && was != f.typ:
			diffs = append(diffs, fmt.Sprintf("column %s changed from %s to %s", f.column, was, f.typ))
		}
		delete(old, f.name)
	}
	for _, name := range slices.Sorted(maps.Keys(old)) {
		diffs = append(diffs, fmt.Sprintf("column %s was dropped", name))
	}
	if len(diffs) == 0 {
		return ""
	}
	return fmt.Sprintf(" (against version %d: %s)", latest.Version, strings.Join(diffs, "; "))
}

// avroFieldTypes collects the fields of the record schema and of the records nested in it, each
// with its type without null: "long" for "long" and for ["null","long"].
func avroFieldTypes(schema any, into map[string]string) {
	rec, ok := schema.(map[string]any)
	if !ok {
		return
	}
	fields, _ := rec["fields"].([]any)
	for _, f := range fields {
		field, _ := f.(map[string]any)
		name, _ := field["name"].(string)
		typ := field["type"]
		if union, ok := typ.([]any); ok {
			for _, u := range union {
				if u != "null" {
					typ = u
				}
			}
		}
		switch t := typ.(type) {
		case string:
			into[name] = t
		case map[string]any:
			if t["type"] == "record" {
				avroFieldTypes(t, into)
			} else {
				into[name], _ = t["type"].(string)
			}
		}
	}
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
	if err := r.configure(ctx, subject); err != nil {
		return 0, err
	}
	status, data, err := r.do(ctx, http.MethodPost, "/subjects/"+subject+"/versions", map[string]string{"schema": schema})
	if err != nil {
		return 0, err
	}
	if status/100 != 2 {
		level := r.compat
		if level == "" {
			level = "the registry's own"
		}
		return 0, fmt.Errorf("%w (compatibility %s; %s answered %d: %s); keep the column's type, or move the table to a new topic, or relax the subject's compatibility", errSchemaRefused, level, r.base, status, data)
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
