package kcop

import (
	"context"
	"fmt"
	"reflect"
	"strconv"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"

	"github.com/cdcd-dev/cdcd/change"
)

func init() {
	Register("filter", NewFilter)
	Document("filter",
		OptionDoc{"where", "expression", "", "keep the change when this expr-lang expression is true; it sees op (\"c\", \"u\", \"d\", \"r\", \"t\"), table (\"schema.name\"), txn, before.<column> and after.<column>; the rest of the chain skips a dropped change"})
}

// Filter is a KCOP step that keeps or drops a change.
type Filter interface {
	Keep(ctx context.Context, c *change.Change) (bool, error)
}

// Transformer is a KCOP step that gives the rest of the chain another change in place of c; it
// must not modify c.
type Transformer interface {
	Transform(ctx context.Context, c *change.Change) (*change.Change, error)
}

// ExprFilter keeps the changes for which an expr-lang expression (github.com/expr-lang/expr) is true.
//
// The expression sees op, table, txn, and before and after as records of the table's columns: a
// column the table does not have is a compile error, reported at the table's first change (and again
// when its columns change), naming the column. Column values are int, uint, float, bool, string or
// time values; decimals are compared as float64 (exact decimal comparison is not offered), SQL NULL
// and values the source did not send are nil, and before or after is nil when the change has none.
type ExprFilter struct {
	where string
	progs tableCache[*tableProgram]
}

type tableProgram struct {
	prog *vm.Program
	row  reflect.Type // the table's columns, each an any field tagged with its name
	env  reflect.Type // filterEnv with before and after of type *row
}

func envType(row reflect.Type) reflect.Type {
	return reflect.StructOf([]reflect.StructField{
		{Name: "Op", Type: reflect.TypeFor[string](), Tag: `expr:"op"`},
		{Name: "Table", Type: reflect.TypeFor[string](), Tag: `expr:"table"`},
		{Name: "Txn", Type: reflect.TypeFor[string](), Tag: `expr:"txn"`},
		{Name: "Before", Type: reflect.PointerTo(row), Tag: `expr:"before"`},
		{Name: "After", Type: reflect.PointerTo(row), Tag: `expr:"after"`},
	})
}

// filterEnv is what a filter expression sees.
type filterEnv struct {
	Op     string `expr:"op"`
	Table  string `expr:"table"`
	Txn    string `expr:"txn"`
	Before any    `expr:"before"`
	After  any    `expr:"after"`
}

// NewFilter is the Factory of the filter KCOP.
func NewFilter(opts Options) (KCOP, error) {
	var o struct {
		Where string `mapstructure:"where"`
	}
	if err := opts.Decode(&o); err != nil {
		return nil, err
	}
	if o.Where == "" {
		return nil, fmt.Errorf("option where is empty; write an expression such as: op != \"d\" && after.total > 500")
	}
	// The syntax, and everything but the columns, checked now.
	if _, err := expr.Compile(o.Where, expr.AsBool(), expr.Env(filterEnv{})); err != nil {
		return nil, fmt.Errorf("option where: %w", err)
	}
	return &ExprFilter{where: o.Where}, nil
}

// program compiles the expression against t's columns, once per table shape.
func (f *ExprFilter) program(t *change.Table) (*tableProgram, error) {
	return f.progs.Get(t, f.compile)
}

func (f *ExprFilter) compile(t *change.Table) (*tableProgram, error) {
	fields := make([]reflect.StructField, len(t.Columns))
	names := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		fields[i] = reflect.StructField{Name: "C" + strconv.Itoa(i), Type: reflect.TypeFor[any](), Tag: reflect.StructTag(`expr:"` + c.Name + `"`)}
		names[i] = c.Name
	}
	row := reflect.StructOf(fields)
	env := envType(row)
	prog, err := expr.Compile(f.where, expr.AsBool(), expr.Env(reflect.New(env).Elem().Interface()))
	if err != nil {
		return nil, fmt.Errorf("filter %q on %s (columns %v): %w", f.where, t.QualifiedName(), names, err)
	}
	return &tableProgram{prog: prog, row: row, env: env}, nil
}

// Process implements KCOP: a filter alone writes nothing.
func (f *ExprFilter) Process(_ context.Context, _ *change.Change, dst []Record) ([]Record, error) {
	return dst, nil
}

// Keep implements Filter.
func (f *ExprFilter) Keep(_ context.Context, c *change.Change) (bool, error) {
	p, err := f.program(c.Table)
	if err != nil {
		return false, err
	}
	env := reflect.New(p.env).Elem()
	env.Field(0).SetString(string(rune(c.Op)))
	env.Field(1).SetString(c.Table.QualifiedName())
	env.Field(2).SetString(c.Txn.ID)
	for i, row := range []change.Row{c.Before, c.After} {
		if row == nil {
			continue
		}
		r := reflect.New(p.row)
		for j, v := range row {
			if x := filterValue(v); x != nil {
				r.Elem().Field(j).Set(reflect.ValueOf(x))
			}
		}
		env.Field(3 + i).Set(r)
	}
	out, err := expr.Run(p.prog, env.Interface())
	if err != nil {
		return false, fmt.Errorf("filter %q on %v of %s (op %d): %w", f.where, c.Op, c.Table.QualifiedName(), c.Index, err)
	}
	keep, _ := out.(bool)
	return keep, nil
}

// filterValue is a column value as filter expressions see it.
func filterValue(v change.Value) any {
	if v.Kind != change.Present {
		return nil
	}
	switch x := v.V.(type) {
	case change.Decimal:
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil {
			return string(x) // NaN and the infinities stay text
		}
		return f
	case float32:
		return float64(x)
	}
	if s, ok := textOf(v.V); ok {
		return s
	}
	return v.V // int64, uint64, float64, bool, string, []byte, time.Time, intervals and arrays as they are
}
