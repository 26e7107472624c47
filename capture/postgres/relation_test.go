package postgres

import (
	"slices"
	"testing"

	"github.com/cdcd-dev/cdcd/bookmark"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"
)

// TestNewRelationKeys: the key columns are the ones the Relation message flags as the replica
// identity, whatever the catalog says today; only FULL and NOTHING, which flag all or none, take
// the primary key from the catalog.
func TestNewRelationKeys(t *testing.T) {
	cols := func(flags ...uint8) []*pglogrepl.RelationMessageColumn {
		var out []*pglogrepl.RelationMessageColumn
		for i, f := range flags {
			out = append(out, &pglogrepl.RelationMessageColumn{Name: []string{"id", "code", "v"}[i], DataType: pgtype.Int4OID, Flags: f})
		}
		return out
	}
	tests := []struct {
		name     string
		identity byte
		flags    []uint8
		pk       []string
		want     []int
	}{
		{"default: the primary key at this position", 'd', []uint8{1, 0, 0}, []string{"code"}, []int{0}},
		{"index: the identity index, not the primary key", 'i', []uint8{0, 1, 0}, []string{"id"}, []int{1}},
		{"default without a key", 'd', []uint8{0, 0, 0}, nil, nil},
		{"full: every column flagged, the primary key keys", 'f', []uint8{1, 1, 1}, []string{"id"}, []int{0}},
		{"full after the table was dropped", 'f', []uint8{1, 1, 1}, nil, nil},
		{"nothing: the primary key keys inserts", 'n', []uint8{0, 0, 0}, []string{"id", "code"}, []int{0, 1}},
		{"full: a primary key column the message lacks", 'f', []uint8{1, 1}, []string{"v"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := &pglogrepl.RelationMessage{Namespace: "s", RelationName: "t", ReplicaIdentity: tc.identity, Columns: cols(tc.flags...)}
			rel := newRelation("db", m, map[uint32]typeInfo{}, tc.pk, pgtype.NewMap())
			if !slices.Equal(rel.table.KeyIndexes, tc.want) {
				t.Errorf("key indexes %v, want %v", rel.table.KeyIndexes, tc.want)
			}
			for i, c := range rel.table.Columns {
				if c.Key != slices.Contains(tc.want, i) {
					t.Errorf("column %s: Key = %v", c.Name, c.Key)
				}
			}
		})
	}
}

func TestAncestorEnd(t *testing.T) {
	history := "1\t0/3000158\tno recovery target specified\n\n2\t0/5000000\tat restore point \"x\"\n"
	for _, tc := range []struct {
		tli   int32
		begun string
		want  string
		ok    bool
	}{
		{1, "0/0", "0/3000158", true},
		{2, "0/3000158", "0/5000000", true},
		{2, "0/4000000", "", false}, // a timeline 2 of another promotion
		{3, "0/5000000", "", false}, // the current timeline is no ancestor
	} {
		begun, _ := bookmark.ParseLSN(tc.begun)
		end, ok := ancestorEnd(history, tc.tli, begun)
		if ok != tc.ok || (ok && end.String() != tc.want) {
			t.Errorf("timeline %d from %s: %v %v, want %s %v", tc.tli, tc.begun, end, ok, tc.want, tc.ok)
		}
	}
	if _, ok := ancestorEnd("", 1, 0); ok {
		t.Error("an empty history names timeline 1")
	}
	for _, s := range []string{"1@0/0", "3@0/5000000"} {
		tli, start, err := parseLineage(s)
		if err != nil || formatLineage(tli, start) != s {
			t.Errorf("lineage %q: %d %v %v", s, tli, start, err)
		}
	}
	for _, s := range []string{"", "1", "0@0/0", "x@0/0", "1@zz"} {
		if _, _, err := parseLineage(s); err == nil {
			t.Errorf("lineage %q parsed", s)
		}
	}
}
