// Package kcop holds the Kafka custom operation processors: formatters that turn one row change
// with its context into zero or more Kafka records. KCOPs compose into chains; the writer stamps every
// record they return with ordering headers and keeps each partition in source order.
//
// A KCOP is registered under a name (built-ins register themselves; custom ones call Register from an
// init function, compiled in) and built from the options of its entry in the configuration. A KCOP
// must be safe for use by several goroutines at once, must not change the change it is given (the
// next KCOP of the chain sees the same one), and must not keep c or its rows after Process returns.
//
// The Stage runs the configured chain between capture and the writer, which is the stage's Sink: the
// chain's records for each change reach the sink in source order. A KCOP marks a passing failure with
// Retryable (the stage retries that change with backoff, nothing lost or written twice); any other
// error stops cdcd as terminal, naming the change.
package kcop

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/go-viper/mapstructure/v2"

	"github.com/cdcd-dev/cdcd/change"
)

// PartitionByKey asks the writer to choose the partition by hashing the key (Kafka's default
// partitioner, compatible with the Java client's).
const PartitionByKey int32 = -1

// Header is a Kafka record header.
type Header struct {
	Key   string
	Value []byte
}

// Record is one Kafka record a KCOP wants written. A nil Value is a tombstone.
type Record struct {
	Topic     string
	Partition int32
	Key       []byte
	Value     []byte
	Headers   []Header
}

// KCOP turns a change into records.
type KCOP interface {
	// Process appends the records for c to dst and returns the extended slice.
	Process(ctx context.Context, c *change.Change, dst []Record) ([]Record, error)
}

// Factory builds a KCOP from its options. It must reject options it does not know, naming them.
type Factory func(opts Options) (KCOP, error)

var (
	registryMu sync.RWMutex
	registry   = map[string]Factory{}
)

// Register makes a KCOP available under name. It is meant for init functions; registering a name
// twice is an error returned by New for that name, not a panic.
func Register(name string, f Factory) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[name]; dup {
		registry[name] = func(Options) (KCOP, error) {
			return nil, fmt.Errorf("kcop %q is registered twice", name)
		}
		return
	}
	registry[name] = f
}

// OptionDoc describes one option of a KCOP, for `cdcd config keys`.
type OptionDoc struct {
	Name, Type, Default, Doc string
}

var docs = map[string][]OptionDoc{} // guarded by registryMu

// Document records what the options of the KCOP registered as name mean; like Register, it is meant
// for init functions.
func Document(name string, opts ...OptionDoc) {
	registryMu.Lock()
	defer registryMu.Unlock()
	docs[name] = append(docs[name], opts...)
}

// OptionsOf returns the documented options of the KCOP registered as name.
func OptionsOf(name string) []OptionDoc {
	registryMu.RLock()
	defer registryMu.RUnlock()
	return append([]OptionDoc(nil), docs[name]...)
}

// Names lists the registered KCOPs.
func Names() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// New builds the KCOP registered as name.
func New(name string, opts Options) (KCOP, error) {
	registryMu.RLock()
	f, ok := registry[name]
	registryMu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("kcop %q is not known (known: %s)", name, strings.Join(Names(), ", "))
	}
	k, err := f(opts)
	if err != nil {
		return nil, fmt.Errorf("kcop %s: %w", name, err)
	}
	return k, nil
}

// Chain runs KCOPs one after another on the same change and concatenates their records. A step that
// is a Filter and drops the change ends the chain for it; a step that is a Transformer gives the
// steps after it its new change; every step's Process then runs on the change as it stands (filters
// and transformers write nothing of their own). The usual order is filters, then transforms, then
// one or more formatters, each to its own topics. A step that is a Claimer and claims the change
// ends the chain after its own records.
type Chain []KCOP

// Process implements KCOP.
func (ch Chain) Process(ctx context.Context, c *change.Change, dst []Record) ([]Record, error) {
	for _, k := range ch {
		if f, ok := k.(Filter); ok {
			keep, err := f.Keep(ctx, c)
			if err != nil || !keep {
				return dst, err
			}
		}
		if t, ok := k.(Transformer); ok {
			next, err := t.Transform(ctx, c)
			if err != nil {
				return dst, err
			}
			c = next
		}
		var err error
		if dst, err = k.Process(ctx, c, dst); err != nil {
			return dst, err
		}
		if cl, ok := k.(Claimer); ok && cl.Claims(c) {
			return dst, nil
		}
	}
	return dst, nil
}

// Checker is an optional interface of a KCOP that depends on a service (a schema registry): Check
// reaches it, so that `cdcd validate` reports it and `cdcd run` stops at start, naming it, rather
// than retrying at the first change.
type Checker interface {
	Check(ctx context.Context) error
}

// Check implements Checker for the steps that check a service.
func (ch Chain) Check(ctx context.Context) error {
	for i, k := range ch {
		if c, ok := k.(Checker); ok {
			if err := c.Check(ctx); err != nil {
				return fmt.Errorf("kcops[%d]: %w", i, err)
			}
		}
	}
	return nil
}

// Claimer is an optional interface of a KCOP that takes some changes for itself (the outbox
// router takes its table's rows): after its records for a change it claims, the chain ends, so the
// steps after it never publish that change.
type Claimer interface {
	Claims(c *change.Change) bool
}

// TxnObserver is an optional interface of a KCOP that follows whole source transactions (audit
// formats, transaction-level alerts): BeginTxn before a transaction's first change, CommitTxn after
// its last, which may append records that close the transaction. A KCOP observing transactions keeps
// its state per transaction id.
type TxnObserver interface {
	BeginTxn(ctx context.Context, txn *change.Txn) error
	CommitTxn(ctx context.Context, c *change.Commit, dst []Record) ([]Record, error)
}

// BeginTxn implements TxnObserver for the steps that observe transactions.
func (ch Chain) BeginTxn(ctx context.Context, txn *change.Txn) error {
	for _, k := range ch {
		if o, ok := k.(TxnObserver); ok {
			if err := o.BeginTxn(ctx, txn); err != nil {
				return err
			}
		}
	}
	return nil
}

// CommitTxn implements TxnObserver for the steps that observe transactions.
func (ch Chain) CommitTxn(ctx context.Context, c *change.Commit, dst []Record) ([]Record, error) {
	for _, k := range ch {
		if o, ok := k.(TxnObserver); ok {
			var err error
			if dst, err = o.CommitTxn(ctx, c, dst); err != nil {
				return dst, err
			}
		}
	}
	return dst, nil
}

// Claims implements Claimer for the steps that claim changes.
func (s scoped) Claims(c *change.Change) bool {
	cl, ok := s.k.(Claimer)
	return ok && s.applies(c) && cl.Claims(c)
}

// Check implements Checker for a step that checks a service.
func (s scoped) Check(ctx context.Context) error {
	if c, ok := s.k.(Checker); ok {
		return c.Check(ctx)
	}
	return nil
}

// ForTables applies k only to the changes of the listed tables (schema.name); the chain passes the
// others by it unchanged. No tables: every table.
func ForTables(k KCOP, tables []string) KCOP {
	if len(tables) == 0 {
		return k
	}
	set := make(map[string]bool, len(tables))
	for _, t := range tables {
		set[t] = true
	}
	return scoped{k: k, tables: set}
}

type scoped struct {
	k      KCOP
	tables map[string]bool
}

func (s scoped) applies(c *change.Change) bool { return s.tables[c.Table.QualifiedName()] }

func (s scoped) Process(ctx context.Context, c *change.Change, dst []Record) ([]Record, error) {
	if !s.applies(c) {
		return dst, nil
	}
	return s.k.Process(ctx, c, dst)
}

func (s scoped) Keep(ctx context.Context, c *change.Change) (bool, error) {
	if f, ok := s.k.(Filter); ok && s.applies(c) {
		return f.Keep(ctx, c)
	}
	return true, nil
}

func (s scoped) BeginTxn(ctx context.Context, txn *change.Txn) error {
	if o, ok := s.k.(TxnObserver); ok {
		return o.BeginTxn(ctx, txn)
	}
	return nil
}

func (s scoped) CommitTxn(ctx context.Context, c *change.Commit, dst []Record) ([]Record, error) {
	if o, ok := s.k.(TxnObserver); ok {
		return o.CommitTxn(ctx, c, dst)
	}
	return dst, nil
}

func (s scoped) Transform(ctx context.Context, c *change.Change) (*change.Change, error) {
	if t, ok := s.k.(Transformer); ok && s.applies(c) {
		return t.Transform(ctx, c)
	}
	return c, nil
}

// Options are a KCOP's settings from the configuration. The getters record which keys were read,
// so that Unused can name the ones nobody asked for.
type Options struct {
	m    map[string]any
	used map[string]bool
}

// NewOptions wraps a configuration map.
func NewOptions(m map[string]any) Options {
	return Options{m: m, used: map[string]bool{}}
}

// String returns the string option key, or def when it is not set.
func (o Options) String(key, def string) (string, error) {
	o.used[key] = true
	v, ok := o.m[key]
	if !ok {
		return def, nil
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("option %s: want a string, got %v", key, v)
	}
	return s, nil
}

// Bool returns the boolean option key, or def when it is not set.
func (o Options) Bool(key string, def bool) (bool, error) {
	o.used[key] = true
	v, ok := o.m[key]
	if !ok {
		return def, nil
	}
	switch b := v.(type) {
	case bool:
		return b, nil
	case string:
		switch strings.ToLower(b) {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
	}
	return false, fmt.Errorf("option %s: want true or false, got %v", key, v)
}

// Decode fills into, a pointer to a struct whose fields carry mapstructure tags, from the options,
// with the configuration's own decoding (strings become numbers, booleans and durations where the
// field wants one). An option that names no field is an error naming it. Fields of options that are
// not set keep the values into had.
func (o Options) Decode(into any) error {
	var md mapstructure.Metadata
	d, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		Result: into, Metadata: &md, WeaklyTypedInput: true,
		DecodeHook: mapstructure.ComposeDecodeHookFunc(mapstructure.StringToTimeDurationHookFunc(), mapstructure.StringToSliceHookFunc(",")),
	})
	if err != nil {
		return err
	}
	if err := d.Decode(o.m); err != nil {
		return fmt.Errorf("options: %w", err)
	}
	for k := range o.m {
		o.used[k] = true
	}
	if len(md.Unused) > 0 {
		slices.Sort(md.Unused)
		return errors.New("unknown option(s) " + strings.Join(md.Unused, ", "))
	}
	return nil
}

// Unused is an error naming the options that no getter read, or nil.
func (o Options) Unused() error {
	var unknown []string
	for k := range o.m {
		if !o.used[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	return errors.New("unknown option(s) " + strings.Join(unknown, ", "))
}
