// Package gcbudget lets a process's garbage collector wait until its memory reaches a budget
// while its live heap is small, and leaves Go's default pacing in force once it is not.
//
// Go collects when the heap has grown by as much as survived the last collection (GOGC=100). A
// process that keeps little alive but allocates fast, as cdcd does (each row's decoded values,
// envelope and request bytes live for milliseconds), therefore collects very often: with 10 MiB
// alive, every 10 MiB allocated. Under a budget it collects only when its memory reaches the
// budget (Go's soft memory limit, with GOGC off), so a budget several times the live heap cuts the
// collector's work by as much. A live heap near the budget would make the limit collect more
// often than the default, so once the live heap passes a share of the budget the package returns
// to GOGC=100 without a limit, and goes back under the budget once the live heap has shrunk.
//
// The promise: memory stays within the budget or within Go's default, whichever is larger, and
// the collector never runs more often than it would by default (short of a jump of the live heap
// between two collections). A process whose environment sets GOGC or GOMEMLIMIT keeps them: Start
// does nothing there.
package gcbudget

import (
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// The live heap at which the budget stops paying: collecting at the budget B frees B minus the
// live heap (and the runtime's own few MiB) per collection, the default frees about the live
// heap. Past relaxAbove*B the default collects less often; the lower bound for going back keeps
// a live heap that hovers around the line from switching at every collection.
const (
	relaxAbove  = 0.40
	budgetBelow = 0.30
)

// Mode is how the collector is paced.
type Mode int

const (
	// Default is Go's own pacing: collect at twice the live heap, no memory limit.
	Default Mode = iota
	// Budgeted collects when the process's memory reaches the budget.
	Budgeted
)

func (m Mode) String() string {
	if m == Budgeted {
		return "budgeted"
	}
	return "default"
}

// next is the mode to use after a collection left live bytes alive, in mode cur, under budget.
func next(cur Mode, live, budget int64) Mode {
	switch {
	case float64(live) > relaxAbove*float64(budget):
		return Default
	case float64(live) < budgetBelow*float64(budget):
		return Budgeted
	default:
		return cur
	}
}

// Controller paces the collector of the whole process; there is one per process at most.
type Controller struct {
	budget   int64
	onSwitch func(Mode, int64)

	mu      sync.Mutex
	mode    Mode
	stopped bool
	// What was in force before Start, restored by Stop.
	prevPercent int
	prevLimit   int64
}

// InEnvironment reports the variable (GOGC or GOMEMLIMIT) that already sets the collector's pacing
// in this process's environment, or "".
func InEnvironment() string {
	for _, v := range []string{"GOGC", "GOMEMLIMIT"} {
		if _, ok := os.LookupEnv(v); ok {
			return v
		}
	}
	return ""
}

// Start puts the collector under budget bytes and keeps checking, after every collection, whether
// the budget still pays. onSwitch, if not nil, is called (on the runtime's finalizer goroutine)
// with each new mode and the live heap that led to it. Start returns nil when budget is not
// positive or when GOGC or GOMEMLIMIT is set in the environment; Stop on a nil Controller does
// nothing.
func Start(budget int64, onSwitch func(Mode, int64)) *Controller {
	if budget <= 0 || InEnvironment() != "" {
		return nil
	}
	c := &Controller{budget: budget, onSwitch: onSwitch}
	c.prevPercent = debug.SetGCPercent(100)
	c.prevLimit = debug.SetMemoryLimit(-1)
	c.apply(next(Default, liveHeap(), budget))
	c.arm()
	return c
}

// Mode returns the pacing in force.
func (c *Controller) Mode() Mode {
	if c == nil {
		return Default
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mode
}

// Stop restores the pacing in force before Start.
func (c *Controller) Stop() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopped = true
	debug.SetGCPercent(c.prevPercent)
	debug.SetMemoryLimit(c.prevLimit)
}

// sentinel is garbage as soon as it is armed; its finalizer runs after the next collection.
// It holds a pointer so that it is never one of the tiny allocations that share a block (and
// whose finalizers may not run).
type sentinel struct{ c *Controller }

// arm sets a sentinel whose finalizer runs after the next collection: once per collection, each
// run arming the next.
func (c *Controller) arm() {
	runtime.SetFinalizer(&sentinel{c}, func(s *sentinel) { s.c.collected() })
}

func (c *Controller) collected() {
	live := liveHeap()
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return
	}
	m := next(c.mode, live, c.budget)
	switched := m != c.mode
	if switched {
		c.apply(m)
	}
	c.mu.Unlock()
	if switched && c.onSwitch != nil {
		c.onSwitch(m, live)
	}
	c.arm()
}

// apply sets mode m; c.mu is held or c is not yet shared.
func (c *Controller) apply(m Mode) {
	c.mode = m
	if m == Budgeted {
		debug.SetMemoryLimit(c.budget)
		debug.SetGCPercent(-1)
		return
	}
	debug.SetGCPercent(100)
	debug.SetMemoryLimit(math.MaxInt64)
}

// liveHeap is the heap the last collection marked alive.
func liveHeap() int64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return int64(s[0].Value.Uint64())
}
