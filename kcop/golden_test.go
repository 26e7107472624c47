package kcop

import (
	"bytes"
	"encoding/binary"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/linkedin/goavro/v2"

	"github.com/cdcd-dev/cdcd/internal/testenv"
)

func TestJSONAuditGolden(t *testing.T) {
	runGolden(t, "json-audit", nil, func(opts map[string]any) (KCOP, error) { return New("json-audit", NewOptions(opts)) },
		func(t *testing.T, recs []Record) []byte {
			for _, r := range recs {
				if !json.Valid(r.Value) {
					t.Errorf("not valid JSON: %s", r.Value)
				}
			}
			return renderText(t, recs)
		})
}

// TestCSVAuditGolden: the lines, each read back by Go's CSV reader into its fields.
func TestCSVAuditGolden(t *testing.T) {
	runGolden(t, "csv-audit", nil, func(opts map[string]any) (KCOP, error) { return New("csv-audit", NewOptions(opts)) },
		func(t *testing.T, recs []Record) []byte {
			var out bytes.Buffer
			out.Write(renderText(t, recs))
			for _, r := range recs {
				fields, err := csv.NewReader(bytes.NewReader(r.Value)).Read()
				if err != nil {
					t.Errorf("Go's CSV reader: %v: %s", err, r.Value)
				}
				if want := 4 + 2*len(orders.Columns); len(fields) != want {
					t.Errorf("%d fields, want %d", len(fields), want)
				}
				fmt.Fprintf(&out, "fields=%q\n", fields)
			}
			return out.Bytes()
		})
}

// avroReader decodes Confluent-format records with the schemas the registry serves for their ids,
// into Avro's JSON encoding.
type avroReader struct {
	base   string
	mu     sync.Mutex
	codecs map[uint32]*goavro.Codec
}

func (a *avroReader) text(t *testing.T, b []byte) string {
	t.Helper()
	if b == nil {
		return "(none)"
	}
	if len(b) < 5 || b[0] != 0 {
		t.Fatalf("not Confluent's wire format: % x", b)
	}
	id := binary.BigEndian.Uint32(b[1:5])
	a.mu.Lock()
	codec := a.codecs[id]
	a.mu.Unlock()
	if codec == nil {
		resp, err := http.Get(fmt.Sprintf("%s/schemas/ids/%d", a.base, id))
		if err != nil {
			t.Fatal(err)
		}
		var s struct{ Schema string }
		err = json.NewDecoder(resp.Body).Decode(&s)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if codec, err = goavro.NewCodec(s.Schema); err != nil {
			t.Fatal(err)
		}
		a.mu.Lock()
		a.codecs[id] = codec
		a.mu.Unlock()
	}
	native, rest, err := codec.NativeFromBinary(b[5:])
	if err != nil || len(rest) != 0 {
		t.Fatalf("decoding: %v (%d bytes left)", err, len(rest))
	}
	text, err := codec.TextualFromNative(nil, native)
	if err != nil {
		t.Fatal(err)
	}
	// goavro writes a record's fields in no fixed order: sorted here, numbers kept as written.
	d := json.NewDecoder(bytes.NewReader(text))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("%v: %s", err, text)
	}
	sorted, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(sorted)
}

// TestAvroGolden: the avro, avro-audit and avro-audit-rows records, read back with the schemas the
// registry holds for the ids they carry, in Avro's JSON encoding, and each schema.
func TestAvroGolden(t *testing.T) {
	base := testenv.RegistryURL(t)
	reader := &avroReader{base: base, codecs: map[uint32]*goavro.Codec{}}
	for _, name := range []string{"avro", "avro-audit", "avro-audit-rows"} {
		t.Run(name, func(t *testing.T) {
			var extra []goldenCase
			if name == "avro" {
				extra = []goldenCase{{"delete_row", map[string]any{"deletes": "row"}, goldenCases()[5].c}}
				extra[0].c.Op, extra[0].c.After = 'd', nil
			}
			runGolden(t, name, extra, func(opts map[string]any) (KCOP, error) {
				o := map[string]any{"registry_url": base, "topic": "golden-" + name + ".{table}"}
				for k, v := range opts {
					o[k] = v
				}
				return New(name, NewOptions(o))
			}, func(t *testing.T, recs []Record) []byte {
				var out bytes.Buffer
				for _, r := range recs {
					fmt.Fprintf(&out, "topic=%s partition=%d\nkey=%s\nvalue=%s\n\n", r.Topic, r.Partition, reader.text(t, r.Key), reader.text(t, r.Value))
				}
				return out.Bytes()
			})
			// The value schema, as registered.
			resp, err := http.Get(fmt.Sprintf("%s/subjects/golden-%s.orders-value/versions/latest/schema", base, name))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var schema bytes.Buffer
			if _, err := schema.ReadFrom(resp.Body); err != nil {
				t.Fatal(err)
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, schema.Bytes(), "", "  "); err != nil {
				t.Fatalf("%v: %s", err, schema.Bytes())
			}
			pretty.WriteByte('\n')
			checkGolden(t, strings.ReplaceAll(name, "-", "_")+"_value_schema", pretty.Bytes())
		})
	}
}
