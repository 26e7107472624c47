package capture

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cdcd-dev/cdcd/internal/preflight"
)

// A Kind is a source database kind (postgres, mariadb, ...). Its package registers it from init,
// the way a database/sql driver does, and the daemon knows it only through this contract: its
// settings, their checks, and the Source they open.
type Kind struct {
	// Section is the configuration section of the kind's settings, source.<Section>; kinds that
	// share a reader (mysql and mariadb) share a section.
	Section string
	// NewConfig returns the kind's settings with their defaults: a pointer to a struct whose
	// fields carry mapstructure tags (the keys under source.<Section>) and doc tags (their meaning).
	NewConfig func() Config
}

// Config is one kind's settings, decoded from source.<Section>.
type Config interface {
	// Validate reports every value that cannot work, each error naming its full key
	// (source.<section>.<key>) and what it accepts; it does not connect.
	Validate() error
	// Check connects as cdcd would and adds a finding for every prerequisite of capture to r,
	// changing nothing; it returns an error only when ctx ends.
	Check(ctx context.Context, r *preflight.Report) error
	// Open connects to the source and reads its identity; Run starts the capture.
	Open(ctx context.Context, log *slog.Logger) (Source, error)
}

// ErrInUse marks an error of Run or Open saying that another reader holds the source's replication
// stream (a PostgreSQL slot still owned by a dying predecessor): worth waiting for a little, unlike
// other failures.
var ErrInUse = errors.New("the source's replication stream is in use by another reader")

// Lagger is an optional interface of a Source: how far the source's log has run ahead of what is
// durable downstream, in bytes of log (-1: not known) and in time since the oldest transaction that
// is read but not yet durable committed (0 when everything read is durable).
type Lagger interface {
	Lag() (bytes int64, behind float64)
}

// Copier is an optional interface of a Source: the progress of the snapshot it is taking, table by
// table, in copy order (finished tables of this run first); empty when none runs.
type Copier interface {
	Copying() []TableCopy
}

// TableCopy is one table's snapshot progress.
type TableCopy struct {
	Table string
	// Rows is how many rows are copied, earlier runs' included; Bytes how many bytes of values this
	// run copied (their text forms).
	Rows, Bytes int64
	// Estimate is how many rows the source's statistics expect in all; -1 when it does not know.
	Estimate int64
	Chunks   int64
	// Started is when this run began copying the table; zero while it waits its turn.
	Started time.Time
	// RunRows is how many rows this run copied, for the rate.
	RunRows int64
	Done    bool
	// Paused says the snapshot waits for a request to resume it.
	Paused bool
}

// SnapshotRequester is an optional interface of a Source: snapshots asked for while it streams.
type SnapshotRequester interface {
	// RequestSnapshot acts on the snapshot as req says. It returns once the source has taken the
	// request in hand (the copy itself runs on), or an error that names what it refused and why.
	RequestSnapshot(ctx context.Context, req SnapshotRequest) error
}

// SnapshotAction is what a SnapshotRequest asks for.
type SnapshotAction int

const (
	// SnapshotStart queues tables for copying behind those already queued.
	SnapshotStart SnapshotAction = iota + 1
	// SnapshotPause stops reading new chunks until SnapshotResume; the queue stays.
	SnapshotPause
	// SnapshotResume continues a paused snapshot.
	SnapshotResume
	// SnapshotCancel drops tables from the queue (all of them when none is named); rows copied so
	// far stay delivered.
	SnapshotCancel
)

var snapshotActions = map[SnapshotAction]string{SnapshotStart: "start", SnapshotPause: "pause", SnapshotResume: "resume", SnapshotCancel: "cancel"}

func (a SnapshotAction) String() string {
	if s, ok := snapshotActions[a]; ok {
		return s
	}
	return fmt.Sprintf("SnapshotAction(%d)", int(a))
}

// ParseSnapshotAction reads an action's name: start, pause, resume or cancel.
func ParseSnapshotAction(s string) (SnapshotAction, error) {
	for a, name := range snapshotActions {
		if name == s {
			return a, nil
		}
	}
	return 0, fmt.Errorf("snapshot action %q is not one of start, pause, resume, cancel", s)
}

// SnapshotRequest asks a source to start, pause, resume or cancel copying tables (schema.table).
type SnapshotRequest struct {
	Action SnapshotAction
	Tables []string
}

// Flusher is an optional interface of a Source: confirm the acknowledged position to the server
// after Run has returned, when no stream is open to carry it.
type Flusher interface {
	Flush(ctx context.Context) error
}

// RetainedLogger is an optional interface of a Config: how many bytes of log the server keeps for
// cdcd's sake (a slot's retained WAL, the binlogs after the position cdcd confirmed), asked on a
// connection of its own, beside a running Source.
type RetainedLogger interface {
	RetainedLog(ctx context.Context) (int64, error)
}

var registry = struct {
	sync.Mutex
	kinds map[string]Kind
	dup   map[string]int
}{kinds: map[string]Kind{}, dup: map[string]int{}}

// Register makes a source kind available under name. Registering a name twice makes Lookup of that
// name fail, naming the conflict, rather than letting one silently win.
func Register(name string, k Kind) {
	registry.Lock()
	defer registry.Unlock()
	if _, ok := registry.kinds[name]; ok {
		registry.dup[name]++
		return
	}
	registry.kinds[name] = k
}

// Lookup returns the kind registered under name.
func Lookup(name string) (Kind, error) {
	registry.Lock()
	defer registry.Unlock()
	if registry.dup[name] > 0 {
		return Kind{}, fmt.Errorf("source kind %q is registered %d times; link only one package that provides it", name, registry.dup[name]+1)
	}
	k, ok := registry.kinds[name]
	if !ok {
		return Kind{}, fmt.Errorf("%q is not one of %s", name, strings.Join(kindsLocked(), ", "))
	}
	return k, nil
}

// Kinds lists the registered kind names, sorted.
func Kinds() []string {
	registry.Lock()
	defer registry.Unlock()
	return kindsLocked()
}

func kindsLocked() []string {
	names := make([]string, 0, len(registry.kinds))
	for n := range registry.kinds {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Sections returns, for every configuration section of the registered kinds, that section's
// settings with their defaults, sorted by section.
func Sections() []SectionConfig {
	registry.Lock()
	defer registry.Unlock()
	seen := map[string]bool{}
	var out []SectionConfig
	for _, n := range kindsLocked() {
		k := registry.kinds[n]
		if seen[k.Section] {
			continue
		}
		seen[k.Section] = true
		out = append(out, SectionConfig{Section: k.Section, Config: k.NewConfig()})
	}
	slices.SortFunc(out, func(a, b SectionConfig) int { return cmp.Compare(a.Section, b.Section) })
	return out
}

// SectionConfig is one configuration section and its settings.
type SectionConfig struct {
	Section string
	Config  Config
}
