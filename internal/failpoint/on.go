//go:build failpoints

package failpoint

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Enabled reports whether this build has failpoints.
const Enabled = true

type action struct {
	kind  string // kill, sleep, block
	sleep time.Duration
	nth   int // fire on this hit only; 0: every hit
	hits  int
}

var (
	mu     sync.Mutex
	armed  map[string]*action
	parsed bool
)

func load() {
	armed = map[string]*action{}
	for _, item := range strings.Split(os.Getenv("FAILPOINTS"), ";") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, spec, ok := strings.Cut(item, "=")
		if !ok {
			fmt.Fprintf(os.Stderr, "failpoint: %q is not name=action\n", item)
			os.Exit(2)
		}
		a := &action{}
		if s, n, ok := strings.Cut(spec, "@"); ok {
			v, err := strconv.Atoi(n)
			if err != nil || v < 1 {
				fmt.Fprintf(os.Stderr, "failpoint: %q: @N wants a positive count\n", item)
				os.Exit(2)
			}
			spec, a.nth = s, v
		}
		kind, arg, _ := strings.Cut(spec, ":")
		a.kind = kind
		switch kind {
		case "kill", "block", "on":
		case "sleep":
			d, err := time.ParseDuration(arg)
			if err != nil {
				fmt.Fprintf(os.Stderr, "failpoint: %q: %v\n", item, err)
				os.Exit(2)
			}
			a.sleep = d
		default:
			fmt.Fprintf(os.Stderr, "failpoint: %q: unknown action %q (kill, sleep:<d>, block, on)\n", item, kind)
			os.Exit(2)
		}
		armed[strings.TrimSpace(name)] = a
	}
}

// Hit acts as FAILPOINTS says for name, if it says anything, and reports whether it fired.
func Hit(ctx context.Context, name string) bool {
	mu.Lock()
	if !parsed {
		load()
		parsed = true
	}
	a := armed[name]
	if a == nil {
		mu.Unlock()
		return false
	}
	a.hits++
	fire := a.nth == 0 || a.hits == a.nth
	mu.Unlock()
	if !fire {
		return false
	}
	fmt.Fprintf(os.Stderr, "failpoint %s fired\n", name)
	switch a.kind {
	case "kill":
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	case "sleep":
		select {
		case <-time.After(a.sleep):
		case <-ctx.Done():
		}
	case "block":
		<-ctx.Done()
	}
	return true
}
