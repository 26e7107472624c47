package kcop

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/cdcd-dev/cdcd/change"
)

func init() {
	Register("outbox", NewOutbox)
	Document("outbox",
		OptionDoc{"table", "string", "", "the outbox table (schema.table, MySQL: database.table); the router takes every change of it"},
		OptionDoc{"topic", "string", outboxDefaultTopic, "the topic of an event; {aggregatetype} is replaced by the row's aggregate type"},
		OptionDoc{"id_column", "string", "id", "the column of the event's id, sent as the header id"},
		OptionDoc{"aggregate_type_column", "string", "aggregatetype", "the column naming the aggregate type, which routes the event"},
		OptionDoc{"aggregate_id_column", "string", "aggregateid", "the column of the aggregate id, the record's key"},
		OptionDoc{"type_column", "string", "type", "the column of the event type, sent as the header type when the table has it"},
		OptionDoc{"payload_column", "string", "payload", "the column of the event's payload, the record's value"})
}

const outboxDefaultTopic = "outbox.event.{aggregatetype}"

// Outbox routes the rows inserted into an outbox table as events, by Debezium's outbox
// conventions: the topic from the aggregate type (outbox.event.<aggregatetype>), the aggregate id
// as the key, the payload as the value (its text, or its bytes for a binary column; NULL writes a
// tombstone), the event id as the header id and the event type as the header type. Only inserts
// are events: updates, deletes (an application usually deletes its outbox row in the transaction
// that inserted it), truncates and snapshot rows of the outbox table write nothing. The router
// claims every change of its table, so the outbox rows themselves are never published by the
// entries after it; put it first in the chain. Events keep their transaction: through the tcc they
// arrive with the transaction's other records.
type Outbox struct {
	table                                    string
	topic                                    string
	idCol, typeCol, aggTypeCol, aggIDCol, pl string
	columns                                  tableCache[outboxColumns]
}

type outboxColumns struct {
	id, aggType, aggID, payload int
	typ                         int // -1 when the table has no event type column
}

// NewOutbox is the Factory of the outbox KCOP.
func NewOutbox(opts Options) (KCOP, error) {
	o := struct {
		Table   string `mapstructure:"table"`
		Topic   string `mapstructure:"topic"`
		ID      string `mapstructure:"id_column"`
		AggType string `mapstructure:"aggregate_type_column"`
		AggID   string `mapstructure:"aggregate_id_column"`
		Type    string `mapstructure:"type_column"`
		Payload string `mapstructure:"payload_column"`
	}{Topic: outboxDefaultTopic, ID: "id", AggType: "aggregatetype", AggID: "aggregateid", Type: "type", Payload: "payload"}
	if err := opts.Decode(&o); err != nil {
		return nil, err
	}
	if s, n, ok := strings.Cut(o.Table, "."); !ok || s == "" || n == "" {
		return nil, fmt.Errorf("option table %q: name the outbox table as schema.table (MySQL: database.table)", o.Table)
	}
	if o.Topic == "" {
		return nil, fmt.Errorf("option topic is empty; the default is %s", outboxDefaultTopic)
	}
	for name, v := range map[string]string{"id_column": o.ID, "aggregate_type_column": o.AggType, "aggregate_id_column": o.AggID, "payload_column": o.Payload} {
		if v == "" {
			return nil, fmt.Errorf("option %s is empty", name)
		}
	}
	return &Outbox{table: o.Table, topic: o.Topic, idCol: o.ID, typeCol: o.Type, aggTypeCol: o.AggType, aggIDCol: o.AggID, pl: o.Payload}, nil
}

// Claims implements Claimer: every change of the outbox table.
func (o *Outbox) Claims(c *change.Change) bool { return c.Table.QualifiedName() == o.table }

func (o *Outbox) columnsOf(t *change.Table) (outboxColumns, error) {
	return o.columns.Get(t, func(t *change.Table) (outboxColumns, error) {
		find := func(option, name string) (int, error) {
			i := slices.IndexFunc(t.Columns, func(c change.Column) bool { return c.Name == name })
			if i < 0 && option != "" {
				return i, fmt.Errorf("outbox: %s has no column %s (option %s)", t.QualifiedName(), name, option)
			}
			return i, nil
		}
		var cols outboxColumns
		var err error
		for _, f := range []struct {
			into         *int
			option, name string
		}{{&cols.id, "id_column", o.idCol}, {&cols.aggType, "aggregate_type_column", o.aggTypeCol},
			{&cols.aggID, "aggregate_id_column", o.aggIDCol}, {&cols.payload, "payload_column", o.pl}, {&cols.typ, "", o.typeCol}} {
			if *f.into, err = find(f.option, f.name); err != nil {
				return cols, err
			}
		}
		return cols, nil
	})
}

// Process implements KCOP.
func (o *Outbox) Process(_ context.Context, c *change.Change, dst []Record) ([]Record, error) {
	if c.Op != change.Insert || !o.Claims(c) {
		return dst, nil
	}
	cols, err := o.columnsOf(c.Table)
	if err != nil {
		return dst, err
	}
	text := func(i int, what string) (string, error) {
		v := c.After[i]
		if v.Kind != change.Present || !renderable(v.V) {
			state := "NULL"
			switch {
			case v.Kind == change.Present:
				state = fmt.Sprintf("a value of Go type %T, which cdcd cannot render", v.V)
			case v.Kind != change.Null:
				state = "not sent by the source"
			}
			return "", fmt.Errorf("outbox: the %s (column %s) of an event in %s, transaction %s, is %s; it must hold a value",
				what, c.Table.Columns[i].Name, c.Table.QualifiedName(), c.Txn.ID, state)
		}
		return csvText(v.V), nil
	}
	aggType, err := text(cols.aggType, "aggregate type")
	if err != nil {
		return dst, err
	}
	aggID, err := text(cols.aggID, "aggregate id")
	if err != nil {
		return dst, err
	}
	id, err := text(cols.id, "event id")
	if err != nil {
		return dst, err
	}
	var sb strings.Builder
	before, after, _ := strings.Cut(o.topic, "{aggregatetype}")
	sb.WriteString(before)
	writeTopicPart(&sb, aggType)
	sb.WriteString(after)
	rec := Record{Topic: sb.String(), Partition: PartitionByKey, Key: []byte(aggID), Headers: []Header{{Key: "id", Value: []byte(id)}}}
	if cols.typ >= 0 {
		if v := c.After[cols.typ]; v.Kind == change.Present && renderable(v.V) {
			rec.Headers = append(rec.Headers, Header{Key: "type", Value: []byte(csvText(v.V))})
		}
	}
	switch v := c.After[cols.payload]; {
	case v.Kind == change.Null:
	case v.Kind != change.Present:
		return dst, fmt.Errorf("outbox: the payload of event %s in %s was not sent by the source", id, c.Table.QualifiedName())
	default:
		if b, ok := v.V.([]byte); ok {
			rec.Value = b
		} else {
			payload, err := text(cols.payload, "payload")
			if err != nil {
				return dst, err
			}
			rec.Value = []byte(payload)
		}
	}
	return append(dst, rec), nil
}
