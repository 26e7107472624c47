package capture

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/cdcd-dev/cdcd/internal/preflight"
)

type stubConfig struct {
	Addr string `mapstructure:"addr"`
}

func (*stubConfig) Validate() error                                    { return nil }
func (*stubConfig) Check(context.Context, *preflight.Report) error     { return nil }
func (*stubConfig) Open(context.Context, *slog.Logger) (Source, error) { return nil, nil }

func TestRegistry(t *testing.T) {
	newStub := func() Config { return &stubConfig{} }
	Register("test-a", Kind{Section: "test_shared", NewConfig: newStub})
	Register("test-b", Kind{Section: "test_shared", NewConfig: newStub})
	Register("test-dup", Kind{Section: "test_dup", NewConfig: newStub})
	Register("test-dup", Kind{Section: "test_dup", NewConfig: newStub})

	if k, err := Lookup("test-a"); err != nil || k.Section != "test_shared" {
		t.Fatalf("Lookup(test-a) = %+v, %v", k, err)
	}
	if _, err := Lookup("test-dup"); err == nil || !strings.Contains(err.Error(), "registered 2 times") {
		t.Errorf("a kind registered twice: err = %v", err)
	}
	if _, err := Lookup("oracle"); err == nil || !strings.Contains(err.Error(), `"oracle" is not one of`) || !strings.Contains(err.Error(), "test-a") {
		t.Errorf("an unknown kind: err = %v", err)
	}
	shared := 0
	for _, s := range Sections() {
		if s.Section == "test_shared" {
			shared++
			if _, ok := s.Config.(*stubConfig); !ok {
				t.Errorf("section test_shared holds %T", s.Config)
			}
		}
	}
	if shared != 1 {
		t.Errorf("two kinds of one section give %d sections, want 1", shared)
	}
}
