package kcop

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/cdcd-dev/cdcd/change"
)

// HeaderSources lists what a header added by WithHeaders can carry: the audit fields of a change,
// or column.<name> for a column's value.
var HeaderSources = []string{"op", "ts", "txid", "pos", "table", "op_index", "snapshot", "column.<name>"}

// reservedHeaderPrefix starts the ordering headers the writer stamps on every record.
const reservedHeaderPrefix = "cdcd."

// WithHeaders adds headers to every record k writes for a change: spec maps a header's key to its
// source, an audit field (op, ts, txid, pos, table, op_index, snapshot) or column.<name>, the
// column's value in the after image (the before image for a delete) as text. A NULL column gives a
// header with no value; a column whose value the source did not send gives no header. Records that
// close a transaction get the transaction's fields only. A column a table does not have is a
// terminal error at that table's first change, naming both.
func WithHeaders(k KCOP, spec map[string]string) (KCOP, error) {
	if len(spec) == 0 {
		return k, nil
	}
	if _, ok := k.(Filter); ok {
		return nil, fmt.Errorf("headers: a filter writes no records to put headers on")
	}
	if _, ok := k.(Transformer); ok {
		return nil, fmt.Errorf("headers: a transform writes no records to put headers on; set headers on the formatter after it")
	}
	h := &headered{k: k}
	for _, key := range slices.Sorted(maps.Keys(spec)) {
		src := spec[key]
		if key == "" || strings.HasPrefix(key, reservedHeaderPrefix) {
			return nil, fmt.Errorf("headers: %q is not a usable header key (empty, or under %s, which cdcd's ordering headers use)", key, reservedHeaderPrefix)
		}
		hs := headerSpec{key: key}
		if col, ok := strings.CutPrefix(src, "column."); ok && col != "" {
			hs.column = col
		} else if slices.Contains(HeaderSources[:len(HeaderSources)-1], src) {
			hs.field = src
		} else {
			return nil, fmt.Errorf("headers: %s: %q is not one of %s", key, src, strings.Join(HeaderSources, ", "))
		}
		h.spec = append(h.spec, hs)
	}
	return h, nil
}

type headerSpec struct {
	key, field, column string
}

type headered struct {
	k       KCOP
	spec    []headerSpec
	columns tableCache[[]int] // per spec entry: the column's index, -1 for an audit field
}

func (h *headered) indexes(t *change.Table) ([]int, error) {
	return h.columns.Get(t, func(t *change.Table) ([]int, error) {
		idx := make([]int, len(h.spec))
		for n, s := range h.spec {
			idx[n] = -1
			if s.column == "" {
				continue
			}
			i := slices.IndexFunc(t.Columns, func(c change.Column) bool { return c.Name == s.column })
			if i < 0 {
				return nil, fmt.Errorf("headers: %s: %s has no column %s", s.key, t.QualifiedName(), s.column)
			}
			idx[n] = i
		}
		return idx, nil
	})
}

// txnField is an audit field of the transaction, or false for one of a change.
func txnField(field string, txn *change.Txn) ([]byte, bool) {
	switch field {
	case "txid":
		return []byte(txn.ID), true
	case "pos":
		return []byte(txn.Position), true
	case "ts":
		if txn.CommitTime.IsZero() {
			return nil, true
		}
		return []byte(txn.CommitTime.UTC().Format("2006-01-02T15:04:05.000000Z07:00")), true
	case "snapshot":
		return strconv.AppendBool(nil, txn.Snapshot), true
	}
	return nil, false
}

// Process implements KCOP.
func (h *headered) Process(ctx context.Context, c *change.Change, dst []Record) ([]Record, error) {
	first := len(dst)
	dst, err := h.k.Process(ctx, c, dst)
	if err != nil || len(dst) == first {
		return dst, err
	}
	idx, err := h.indexes(c.Table)
	if err != nil {
		return dst, err
	}
	row := c.After
	if row == nil {
		row = c.Before
	}
	headers := make([]Header, 0, len(h.spec))
	for n, s := range h.spec {
		if v, ok := txnField(s.field, c.Txn); ok {
			headers = append(headers, Header{Key: s.key, Value: v})
			continue
		}
		switch s.field {
		case "op":
			headers = append(headers, Header{Key: s.key, Value: []byte(c.Op.String())})
		case "table":
			headers = append(headers, Header{Key: s.key, Value: []byte(c.Table.QualifiedName())})
		case "op_index":
			headers = append(headers, Header{Key: s.key, Value: strconv.AppendInt(nil, c.Index, 10)})
		case "":
			if row == nil {
				continue
			}
			switch v := row[idx[n]]; v.Kind {
			case change.Null:
				headers = append(headers, Header{Key: s.key})
			case change.Unchanged, change.Absent:
			default:
				if !renderable(v.V) {
					return dst, fmt.Errorf("headers: %s: column %s of %s holds a value of Go type %T, which cdcd cannot render", s.key, s.column, c.Table.QualifiedName(), v.V)
				}
				headers = append(headers, Header{Key: s.key, Value: []byte(csvText(v.V))})
			}
		}
	}
	addHeaders(dst[first:], headers)
	return dst, nil
}

// addHeaders appends headers to each record's own, sharing no backing array between records.
func addHeaders(recs []Record, headers []Header) {
	headers = headers[:len(headers):len(headers)]
	for i := range recs {
		recs[i].Headers = append(recs[i].Headers[:len(recs[i].Headers):len(recs[i].Headers)], headers...)
	}
}

// BeginTxn implements TxnObserver.
func (h *headered) BeginTxn(ctx context.Context, txn *change.Txn) error {
	if o, ok := h.k.(TxnObserver); ok {
		return o.BeginTxn(ctx, txn)
	}
	return nil
}

// CommitTxn implements TxnObserver: the closing records get the transaction's fields.
func (h *headered) CommitTxn(ctx context.Context, c *change.Commit, dst []Record) ([]Record, error) {
	o, ok := h.k.(TxnObserver)
	if !ok {
		return dst, nil
	}
	first := len(dst)
	dst, err := o.CommitTxn(ctx, c, dst)
	if err != nil {
		return dst, err
	}
	var headers []Header
	for _, s := range h.spec {
		if v, ok := txnField(s.field, c.Txn); ok {
			headers = append(headers, Header{Key: s.key, Value: v})
		}
	}
	addHeaders(dst[first:], headers)
	return dst, nil
}

// Check implements Checker for a KCOP that checks a service.
func (h *headered) Check(ctx context.Context) error {
	if c, ok := h.k.(Checker); ok {
		return c.Check(ctx)
	}
	return nil
}

// Claims implements Claimer for a KCOP that claims changes.
func (h *headered) Claims(c *change.Change) bool {
	cl, ok := h.k.(Claimer)
	return ok && cl.Claims(c)
}
