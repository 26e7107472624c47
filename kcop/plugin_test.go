package kcop

import (
	"runtime/debug"
	"strings"
	"testing"
)

// TestCompareBuilds: the differences that keep Go from loading a plugin, named with the fix. (The
// plugin tests in cmd/cdcd load real plugins; a kcop test binary cannot, as its kcop package holds
// the test files.)
func TestCompareBuilds(t *testing.T) {
	ours := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/cdcd-dev/cdcd", Version: "v1.4.0"},
		Deps:     []*debug.Module{{Path: "github.com/linkedin/goavro/v2", Version: "v2.15.0"}, {Path: "github.com/shopspring/decimal", Version: "v1.4.0"}},
		Settings: []debug.BuildSetting{{Key: "-race", Value: "true"}}}
	for _, tc := range []struct {
		name   string
		theirs debug.BuildInfo
		want   string
	}{
		{"same", debug.BuildInfo{GoVersion: "go1.26.8", Deps: []*debug.Module{{Path: "github.com/cdcd-dev/cdcd", Version: "v1.4.0"}},
			Settings: []debug.BuildSetting{{Key: "-race", Value: "true"}, {Key: "-buildmode", Value: "plugin"}}}, ""},
		{"go release", debug.BuildInfo{GoVersion: "go1.25.1"}, "was built with go1.25.1, this cdcd with go1.26.8; rebuild the plugin with go1.26.8"},
		{"cdcd version", debug.BuildInfo{GoVersion: "go1.26.8", Deps: []*debug.Module{{Path: "github.com/cdcd-dev/cdcd", Version: "v1.3.0"}}},
			"github.com/cdcd-dev/cdcd v1.3.0 (cdcd has v1.4.0)"},
		{"dependency", debug.BuildInfo{GoVersion: "go1.26.8", Deps: []*debug.Module{{Path: "github.com/shopspring/decimal", Version: "v1.3.1"},
			{Path: "github.com/linkedin/goavro/v2", Version: "v2.12.0", Replace: &debug.Module{Path: "github.com/linkedin/goavro/v2", Version: "v2.15.0"}}}},
			"github.com/shopspring/decimal v1.3.1 (cdcd has v1.4.0)"},
		{"race", debug.BuildInfo{GoVersion: "go1.26.8"}, `-race="", this cdcd with "true"`},
	} {
		err := compareBuilds("kv.so", ours, &tc.theirs)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}
