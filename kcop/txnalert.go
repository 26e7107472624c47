package kcop

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"

	"github.com/shopspring/decimal"

	"github.com/cdcd-dev/cdcd/change"
)

func init() {
	Register("txn-alert", NewTxnAlert)
	Document("txn-alert",
		OptionDoc{"sum", "string", "", "the numeric column summed over the after images of each transaction's changes (of the tables the entry applies to)"},
		OptionDoc{"over", "number", "", "an alert is written when a transaction's sum is over this"},
		OptionDoc{"topic", "string", "", "the alert topic"})
}

// TxnAlert writes one alert record when a transaction's changes sum a column to more than a
// threshold (e.g. a transaction whose order totals exceed 500). The sum is exact (decimal), over the
// after images of inserts, updates and snapshot reads; the alert closes the transaction, after its
// last change's records, so a tcc consumer gets it within the transaction:
//
//	key:   the transaction id
//	value: {"txId", "pos", "end", "ts_ms", "column", "sum", "over", "changes", "tables": [...]}
type TxnAlert struct {
	column string
	over   decimal.Decimal
	topic  string
	mu     sync.Mutex
	open   map[string]*txnSum // by transaction id
}

type txnSum struct {
	sum     decimal.Decimal
	scale   int32 // the largest scale of the values summed, which the sum keeps (1708.20, not 1708.2)
	changes int
	tables  []string
}

// NewTxnAlert is the Factory of the txn-alert KCOP.
func NewTxnAlert(opts Options) (KCOP, error) {
	var o struct {
		Sum   string `mapstructure:"sum"`
		Over  string `mapstructure:"over"`
		Topic string `mapstructure:"topic"`
	}
	if err := opts.Decode(&o); err != nil {
		return nil, err
	}
	if o.Sum == "" || o.Topic == "" {
		return nil, fmt.Errorf("options sum and topic are required, e.g. {type: txn-alert, sum: total, over: 500, topic: alerts.big-transactions}")
	}
	over, err := decimal.NewFromString(o.Over)
	if err != nil {
		return nil, fmt.Errorf("option over %q is not a number", o.Over)
	}
	return &TxnAlert{column: o.Sum, over: over, topic: o.Topic, open: map[string]*txnSum{}}, nil
}

// BeginTxn implements TxnObserver.
func (a *TxnAlert) BeginTxn(_ context.Context, txn *change.Txn) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.open[txn.ID] = &txnSum{}
	return nil
}

// Process implements KCOP: it adds the change's value to its transaction's sum.
func (a *TxnAlert) Process(_ context.Context, c *change.Change, dst []Record) ([]Record, error) {
	if c.After == nil {
		return dst, nil
	}
	i := slices.IndexFunc(c.Table.Columns, func(col change.Column) bool { return col.Name == a.column })
	if i < 0 {
		return dst, fmt.Errorf("txn-alert: column %s is not a column of %s", a.column, c.Table.QualifiedName())
	}
	v := c.After[i]
	if v.Kind != change.Present {
		return dst, nil // NULL, or not sent: adds nothing
	}
	var d decimal.Decimal
	var err error
	switch x := v.V.(type) {
	case change.Decimal:
		d, err = decimal.NewFromString(string(x))
	case int64:
		d = decimal.NewFromInt(x)
	case uint64:
		d, err = decimal.NewFromString(strconv.FormatUint(x, 10))
	case float64:
		d = decimal.NewFromFloat(x)
	case float32:
		d = decimal.NewFromFloat32(x)
	default:
		err = fmt.Errorf("a value of Go type %T", v.V)
	}
	if err != nil {
		return dst, fmt.Errorf("txn-alert: column %s of %s is not a number: %w", a.column, c.Table.QualifiedName(), err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.open[c.Txn.ID]
	if s == nil {
		s = &txnSum{}
		a.open[c.Txn.ID] = s
	}
	s.sum = s.sum.Add(d)
	s.scale = max(s.scale, -d.Exponent())
	s.changes++
	if t := c.Table.QualifiedName(); !slices.Contains(s.tables, t) {
		s.tables = append(s.tables, t)
	}
	return dst, nil
}

// CommitTxn implements TxnObserver: the alert, when the transaction's sum is over the threshold.
func (a *TxnAlert) CommitTxn(_ context.Context, c *change.Commit, dst []Record) ([]Record, error) {
	a.mu.Lock()
	s := a.open[c.Txn.ID]
	delete(a.open, c.Txn.ID)
	a.mu.Unlock()
	if s == nil || s.changes == 0 || !s.sum.GreaterThan(a.over) {
		return dst, nil
	}
	b := []byte(`{"txId":`)
	b = appendString(b, c.Txn.ID)
	b = append(b, `,"pos":`...)
	b = appendString(b, c.Txn.Position)
	b = append(b, `,"end":`...)
	b = appendString(b, c.End)
	b = append(b, `,"ts_ms":`...)
	if c.Txn.CommitTime.IsZero() {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendInt(b, c.Txn.CommitTime.UnixMilli(), 10)
	}
	b = append(b, `,"column":`...)
	b = appendString(b, a.column)
	b = append(b, `,"sum":`...)
	b = appendString(b, s.sum.StringFixed(s.scale))
	b = append(b, `,"over":`...)
	b = appendString(b, a.over.String())
	b = append(b, `,"changes":`...)
	b = strconv.AppendInt(b, int64(s.changes), 10)
	b = append(b, `,"tables":[`...)
	for i, t := range s.tables {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, t)
	}
	b = append(b, "]}"...)
	return append(dst, Record{Topic: a.topic, Partition: PartitionByKey, Key: appendString(nil, c.Txn.ID), Value: b}), nil
}
