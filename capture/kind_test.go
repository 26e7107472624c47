package capture

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cdcd-dev/cdcd/internal/preflight"
)

type stubConfig struct {
	Addr string `mapstructure:"addr"`
}

func (*stubConfig) Validate() error                                    { return nil }
func (*stubConfig) Check(context.Context, *preflight.Report) error     { return nil }
func (*stubConfig) Open(context.Context, *slog.Logger) (Source, error) { return nil, nil }

// registryRuns makes each run's kinds new to the process's registry, so that the test also passes
// under -count.
var registryRuns atomic.Int64

func TestRegistry(t *testing.T) {
	run := fmt.Sprint(registryRuns.Add(1))
	a, b, dup, shared := "test-a"+run, "test-b"+run, "test-dup"+run, "test_shared"+run
	newStub := func() Config { return &stubConfig{} }
	Register(a, Kind{Section: shared, NewConfig: newStub})
	Register(b, Kind{Section: shared, NewConfig: newStub})
	Register(dup, Kind{Section: "test_dup" + run, NewConfig: newStub})
	Register(dup, Kind{Section: "test_dup" + run, NewConfig: newStub})

	if k, err := Lookup(a); err != nil || k.Section != shared {
		t.Fatalf("Lookup(%s) = %+v, %v", a, k, err)
	}
	if _, err := Lookup(dup); err == nil || !strings.Contains(err.Error(), "registered 2 times") {
		t.Errorf("a kind registered twice: err = %v", err)
	}
	if _, err := Lookup("oracle"); err == nil || !strings.Contains(err.Error(), `"oracle" is not one of`) || !strings.Contains(err.Error(), a) {
		t.Errorf("an unknown kind: err = %v", err)
	}
	sections := 0
	for _, s := range Sections() {
		if s.Section == shared {
			sections++
			if _, ok := s.Config.(*stubConfig); !ok {
				t.Errorf("section %s holds %T", shared, s.Config)
			}
		}
	}
	if sections != 1 {
		t.Errorf("two kinds of one section give %d sections, want 1", sections)
	}
}
