package main

import (
	"strings"
	"testing"
)

// TestBuildKCOPNamesBadEntries: what can be known at start is refused at start, naming the entry.
func TestBuildKCOPNamesBadEntries(t *testing.T) {
	for _, tc := range []struct {
		entry map[string]any
		want  string
	}{
		{map[string]any{"type": "filter", "where": "after.total >"}, "kcops[0]: kcop filter: option where"},
		{map[string]any{"type": "hash", "columns": []any{"email"}, "key_file": "/nonexistent/key"}, "key_file"},
		{map[string]any{"type": "json", "tables": []any{"orders"}}, `"orders" is not qualified`},
		{map[string]any{"type": "json", "topik": "x"}, "unknown option(s) topik"},
		{map[string]any{"type": "protobuf"}, `kcop "protobuf" is not known`},
		{map[string]any{"type": "avro"}, "registry_url is empty"},
		{map[string]any{"type": "txn-alert", "sum": "total", "over": "lots", "topic": "a"}, "not a number"},
		{map[string]any{"type": "json", "headers": map[string]any{"x": "user"}}, `headers: x: "user" is not one of op, ts`},
		{map[string]any{"type": "json", "headers": map[string]any{"cdcd.txn": "txid"}}, "ordering headers"},
		{map[string]any{"type": "mask", "columns": []any{"a"}, "headers": map[string]any{"x": "op"}}, "set headers on the formatter after it"},
		{map[string]any{"type": "json", "topics": map[string]any{"orders": "x"}}, `option topics: "orders" is not qualified`},
		{map[string]any{"type": "avro-audit", "registry_url": "http://x", "compatibility": "loose"}, `compatibility "loose"`},
	} {
		_, err := buildKCOP([]map[string]any{tc.entry})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.entry, err, tc.want)
		}
	}
	if _, err := buildKCOP([]map[string]any{{"type": "json", "tables": []any{"public.orders"}}, {"type": "csv-audit", "delimiter": ";"}}); err != nil {
		t.Errorf("a good chain: %v", err)
	}
}
