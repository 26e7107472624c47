package kcop

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/cdcd-dev/cdcd/change"
)

func init() {
	Register("project", NewProject)
	Document("project",
		OptionDoc{"columns", "list of strings", "", "the columns the rest of the chain sees (key columns are always kept, so records keep their keys)"})
	Register("mask", NewMask)
	Document("mask",
		OptionDoc{"columns", "list of strings", "", "the columns whose values are replaced"},
		OptionDoc{"with", "string", "****", "the text that replaces them (NULL stays NULL)"})
	Register("hash", NewHash)
	Document("hash",
		OptionDoc{"columns", "list of strings", "", "the columns whose values are replaced by their keyed hash"},
		OptionDoc{"key_file", "path", "", "a file holding the HMAC key (at least 16 bytes); hash values are HMAC-SHA256 in hex"})
}

// columnSet names columns; a column listed that a table does not have is an error at that table's
// first change, so a misspelt name never passes a value through unmasked.
type columnSet []string

func (cs columnSet) indexes(t *change.Table) ([]int, error) {
	out := make([]int, 0, len(cs))
	for _, name := range cs {
		i := slices.IndexFunc(t.Columns, func(c change.Column) bool { return c.Name == name })
		if i < 0 {
			var have []string
			for _, c := range t.Columns {
				have = append(have, c.Name)
			}
			return nil, fmt.Errorf("column %s is not a column of %s (it has %s)", name, t.QualifiedName(), strings.Join(have, ", "))
		}
		out = append(out, i)
	}
	return out, nil
}

// Project gives the rest of the chain only some columns of each row (and the key columns).
type Project struct {
	columns columnSet
	cache   tableCache[*projection]
}

type projection struct {
	table *change.Table
	keep  []int
}

// NewProject is the Factory of the project KCOP.
func NewProject(opts Options) (KCOP, error) {
	var o struct {
		Columns []string `mapstructure:"columns"`
	}
	if err := opts.Decode(&o); err != nil {
		return nil, err
	}
	if len(o.Columns) == 0 {
		return nil, fmt.Errorf("option columns is empty; list the columns to keep")
	}
	return &Project{columns: o.Columns}, nil
}

// Process implements KCOP; a transform writes nothing of its own.
func (p *Project) Process(_ context.Context, _ *change.Change, dst []Record) ([]Record, error) {
	return dst, nil
}

// Transform implements Transformer.
func (p *Project) Transform(_ context.Context, c *change.Change) (*change.Change, error) {
	pr, err := p.cache.Get(c.Table, func(t *change.Table) (*projection, error) {
		idx, err := p.columns.indexes(t)
		if err != nil {
			return nil, err
		}
		for _, k := range t.KeyIndexes {
			if !slices.Contains(idx, k) {
				idx = append(idx, k)
			}
		}
		slices.Sort(idx)
		nt := *t
		nt.Columns, nt.KeyIndexes = nil, nil
		for _, i := range idx {
			nt.Columns = append(nt.Columns, t.Columns[i])
		}
		for _, k := range t.KeyIndexes { // in the table's key order
			nt.KeyIndexes = append(nt.KeyIndexes, slices.Index(idx, k))
		}
		return &projection{table: &nt, keep: idx}, nil
	})
	if err != nil {
		return nil, err
	}
	out := *c
	out.Table = pr.table
	pick := func(row change.Row) change.Row {
		if row == nil {
			return nil
		}
		r := make(change.Row, len(pr.keep))
		for n, i := range pr.keep {
			r[n] = row[i]
		}
		return r
	}
	out.Before, out.After = pick(c.Before), pick(c.After)
	return &out, nil
}

// Mask replaces the values of some columns with a fixed text.
type Mask struct {
	columns columnSet
	with    string
	cache   tableCache[[]int]
}

// NewMask is the Factory of the mask KCOP.
func NewMask(opts Options) (KCOP, error) {
	o := struct {
		Columns []string `mapstructure:"columns"`
		With    string   `mapstructure:"with"`
	}{With: "****"}
	if err := opts.Decode(&o); err != nil {
		return nil, err
	}
	if len(o.Columns) == 0 {
		return nil, fmt.Errorf("option columns is empty; list the columns to mask")
	}
	return &Mask{columns: o.Columns, with: o.With}, nil
}

// Process implements KCOP; a transform writes nothing of its own.
func (m *Mask) Process(_ context.Context, _ *change.Change, dst []Record) ([]Record, error) {
	return dst, nil
}

// Transform implements Transformer.
func (m *Mask) Transform(_ context.Context, c *change.Change) (*change.Change, error) {
	return replaceValues(c, &m.cache, m.columns, func(change.Value) (any, error) { return m.with, nil })
}

// Hash replaces the values of some columns with their keyed hash (HMAC-SHA256, hex), so equal values
// stay equal, and joinable, without being readable.
type Hash struct {
	columns columnSet
	key     []byte
	cache   tableCache[[]int]
}

// NewHash is the Factory of the hash KCOP.
func NewHash(opts Options) (KCOP, error) {
	var o struct {
		Columns []string `mapstructure:"columns"`
		KeyFile string   `mapstructure:"key_file"`
	}
	if err := opts.Decode(&o); err != nil {
		return nil, err
	}
	if len(o.Columns) == 0 {
		return nil, fmt.Errorf("option columns is empty; list the columns to hash")
	}
	if o.KeyFile == "" {
		return nil, fmt.Errorf("option key_file is empty; name a file holding the HMAC key")
	}
	key, err := os.ReadFile(o.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("option key_file: %w", err)
	}
	key = []byte(strings.TrimSpace(string(key)))
	if len(key) < 16 {
		return nil, fmt.Errorf("option key_file: the key in %s is %d bytes; use at least 16", o.KeyFile, len(key))
	}
	return &Hash{columns: o.Columns, key: key}, nil
}

// Process implements KCOP; a transform writes nothing of its own.
func (h *Hash) Process(_ context.Context, _ *change.Change, dst []Record) ([]Record, error) {
	return dst, nil
}

// Transform implements Transformer.
func (h *Hash) Transform(_ context.Context, c *change.Change) (*change.Change, error) {
	return replaceValues(c, &h.cache, h.columns, func(v change.Value) (any, error) {
		var b []byte
		switch x := v.V.(type) {
		case []byte:
			b = x
		case string:
			b = []byte(x)
		default:
			if !renderable(x) {
				return nil, fmt.Errorf("hash: cannot hash a value of Go type %T", x)
			}
			b, _ = appendAny(nil, x) // its JSON rendering: the same value always hashes alike
		}
		mac := hmac.New(sha256.New, h.key)
		mac.Write(b)
		return hex.EncodeToString(mac.Sum(nil)), nil
	})
}

// replaceValues returns a copy of c whose listed columns' present values are replaced by with's.
// Key columns may be replaced too: the records' keys are then the replaced values.
func replaceValues(c *change.Change, cache *tableCache[[]int], columns columnSet, with func(change.Value) (any, error)) (*change.Change, error) {
	idx, err := cache.Get(c.Table, columns.indexes)
	if err != nil {
		return nil, err
	}
	out := *c
	for _, row := range []*change.Row{&out.Before, &out.After} {
		if *row == nil {
			continue
		}
		r := slices.Clone(*row)
		for _, i := range idx {
			if r[i].Kind != change.Present {
				continue
			}
			v, err := with(r[i])
			if err != nil {
				return nil, fmt.Errorf("column %s of %s: %w", c.Table.Columns[i].Name, c.Table.QualifiedName(), err)
			}
			r[i] = change.Value{V: v}
		}
		*row = r
	}
	return &out, nil
}
