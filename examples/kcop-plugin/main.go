// Command kcop-plugin is an example of a custom KCOP built as a Go plugin:
//
//	go build -buildmode=plugin -o kv.so ./examples/kcop-plugin
//
// and loaded by cdcd from the configuration:
//
//	kcops:
//	  - {type: kv, plugin: /path/to/kv.so, topic: changes.kv}
//
// A plugin exports KCOPs (kcop.PluginSymbol), a func() []kcop.Registration naming the KCOPs it
// adds. It must be built by the same Go release, with the same versions of cdcd and of every module
// both use, and with the same build flags (-trimpath) as the cdcd that loads it; cdcd says which one
// differs. The kv KCOP writes each change as one line of text: the operation, the table, then
// column=value for each column of the after image (the before image for a delete).
package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/cdcd-dev/cdcd/change"
	"github.com/cdcd-dev/cdcd/kcop"
)

// KCOPs is the symbol cdcd looks up in the plugin.
func KCOPs() []kcop.Registration {
	return []kcop.Registration{{
		Name:    "kv",
		Factory: newKV,
		Options: []kcop.OptionDoc{{Name: "topic", Type: "string", Default: "", Doc: "the topic of the lines"}},
	}}
}

type kv struct{ topic string }

func newKV(opts kcop.Options) (kcop.KCOP, error) {
	var o struct {
		Topic string `mapstructure:"topic"`
	}
	if err := opts.Decode(&o); err != nil {
		return nil, err
	}
	if o.Topic == "" {
		return nil, fmt.Errorf("option topic is empty; name the topic of the lines")
	}
	return &kv{topic: o.Topic}, nil
}

// Process implements kcop.KCOP. It keeps nothing of c and does not change it.
func (k *kv) Process(_ context.Context, c *change.Change, dst []kcop.Record) ([]kcop.Record, error) {
	row := c.After
	if row == nil {
		row = c.Before
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", c.Op, c.Table.QualifiedName())
	for i, v := range row {
		switch v.Kind {
		case change.Null:
			fmt.Fprintf(&b, " %s=NULL", c.Table.Columns[i].Name)
		case change.Present:
			fmt.Fprintf(&b, " %s=%v", c.Table.Columns[i].Name, v.V)
		}
	}
	return append(dst, kcop.Record{Topic: k.topic, Partition: kcop.PartitionByKey, Key: []byte(c.Table.QualifiedName()), Value: []byte(b.String())}), nil
}

func main() {}
