package gcbudget

import (
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
	"time"
)

func TestNext(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		cur    Mode
		live   int64
		budget int64
		want   Mode
	}{
		{Default, 0, 64 * mib, Budgeted},
		{Default, 10 * mib, 64 * mib, Budgeted},
		{Budgeted, 10 * mib, 64 * mib, Budgeted},
		// Between the two lines the mode stays as it is.
		{Budgeted, 22 * mib, 64 * mib, Budgeted},
		{Default, 22 * mib, 64 * mib, Default},
		{Budgeted, 26 * mib, 64 * mib, Default},
		{Default, 60 * mib, 64 * mib, Default},
		{Default, 19 * mib, 64 * mib, Budgeted},
		// A budget smaller than the live heap itself never applies.
		{Default, 10 * mib, 8 * mib, Default},
	} {
		if got := next(c.cur, c.live, c.budget); got != c.want {
			t.Errorf("next(%v, %d MiB live, %d MiB budget) = %v, want %v", c.cur, c.live/mib, c.budget/mib, got, c.want)
		}
	}
}

// clearEnvironment runs the test as if neither GOGC nor GOMEMLIMIT were set.
func clearEnvironment(t *testing.T) {
	for _, v := range []string{"GOGC", "GOMEMLIMIT"} {
		if old, ok := os.LookupEnv(v); ok {
			os.Unsetenv(v)
			t.Cleanup(func() { os.Setenv(v, old) })
		}
	}
}

// waitMode collects until the controller reaches mode want.
func waitMode(t *testing.T, c *Controller, want Mode) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for c.Mode() != want {
		if time.Now().After(deadline) {
			t.Fatalf("mode %v after 10s of collections, want %v (live heap %d bytes)", c.Mode(), want, liveHeap())
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}

// TestControllerFollowsTheLiveHeap runs the controller against the real runtime: under a budget
// while little is alive, back to Go's default once the live heap passes its share of the budget,
// under the budget again once it is freed, and the settings before it restored at Stop.
func TestControllerFollowsTheLiveHeap(t *testing.T) {
	clearEnvironment(t)
	const budget = 64 << 20
	runtime.GC()
	var (
		mu       sync.Mutex
		switches []Mode
	)
	c := Start(budget, func(m Mode, _ int64) {
		mu.Lock()
		defer mu.Unlock()
		switches = append(switches, m)
	})
	if c == nil {
		t.Fatal("Start returned nil with a positive budget and no GOGC or GOMEMLIMIT")
	}
	defer c.Stop()
	if c.Mode() != Budgeted {
		t.Fatalf("mode %v at start with a live heap of %d bytes, want budgeted", c.Mode(), liveHeap())
	}
	if got := debug.SetMemoryLimit(-1); got != budget {
		t.Errorf("memory limit %d under the budget, want %d", got, budget)
	}
	if got := debug.SetGCPercent(-1); got != -1 {
		t.Errorf("GOGC %d under the budget, want off (-1)", got)
	}

	held := make([]byte, 40<<20) // more than 40 % of the budget, alive
	for i := range held {
		held[i] = byte(i)
	}
	waitMode(t, c, Default)
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("memory limit %d with a live heap past the budget's share, want none", got)
	}
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC %d with a live heap past the budget's share, want 100", got)
	}
	runtime.KeepAlive(held)
	held = nil

	waitMode(t, c, Budgeted)
	if got := debug.SetMemoryLimit(-1); got != budget {
		t.Errorf("memory limit %d once the heap was freed, want %d", got, budget)
	}

	c.Stop()
	c.Stop()
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("memory limit %d after Stop, want the one before Start (none)", got)
	}
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC %d after Stop, want the one before Start (100)", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(switches) < 2 || switches[0] != Default || switches[len(switches)-1] != Budgeted {
		t.Errorf("switches reported: %v, want default then budgeted", switches)
	}
}

func TestStartLeavesTheEnvironmentsChoice(t *testing.T) {
	for _, v := range []string{"GOGC", "GOMEMLIMIT"} {
		t.Run(v, func(t *testing.T) {
			clearEnvironment(t)
			t.Setenv(v, "200")
			if InEnvironment() != v {
				t.Fatalf("InEnvironment() = %q, want %q", InEnvironment(), v)
			}
			if c := Start(64<<20, nil); c != nil {
				c.Stop()
				t.Fatalf("Start put the collector under a budget although %s is set", v)
			}
		})
	}
	clearEnvironment(t)
	if c := Start(0, nil); c != nil {
		c.Stop()
		t.Fatal("Start with a budget of 0 put the collector under it")
	}
}
