package kcop

import (
	"debug/buildinfo"
	"fmt"
	"os"
	"plugin"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
)

// PluginSymbol is the symbol a KCOP plugin exports: a function of type func() []Registration,
// called once when the plugin is loaded.
const PluginSymbol = "KCOPs"

// Registration is one KCOP a plugin adds: its name, its Factory and the documentation of its
// options.
type Registration struct {
	Name    string
	Factory Factory
	Options []OptionDoc
}

var (
	pluginsMu sync.Mutex
	plugins   = map[string][]string{} // path → the names it registered
)

// LoadPlugin loads the Go plugin at path (built with go build -buildmode=plugin) and registers the
// KCOPs its PluginSymbol returns, once per path; it returns their names. A plugin built by another
// Go release, against other versions of the modules cdcd uses, or with other build flags cannot be
// loaded by Go; the error says which differs and how to rebuild.
func LoadPlugin(path string) ([]string, error) {
	pluginsMu.Lock()
	defer pluginsMu.Unlock()
	if names, ok := plugins[path]; ok {
		return names, nil
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("plugin %s: %w", path, err)
	}
	if err := pluginMatches(path); err != nil {
		return nil, err
	}
	p, err := plugin.Open(path)
	if err != nil {
		return nil, explainPluginError(path, err)
	}
	sym, err := p.Lookup(PluginSymbol)
	if err != nil {
		return nil, fmt.Errorf("plugin %s exports no %s; a KCOP plugin's package main declares func %s() []kcop.Registration", path, PluginSymbol, PluginSymbol)
	}
	list, ok := sym.(func() []Registration)
	if !ok {
		return nil, fmt.Errorf("plugin %s: %s is a %T, want func() []kcop.Registration", path, PluginSymbol, sym)
	}
	var names []string
	for _, r := range list() {
		if r.Name == "" || r.Factory == nil {
			return nil, fmt.Errorf("plugin %s registers a KCOP without a name or a Factory", path)
		}
		registryMu.RLock()
		_, taken := registry[r.Name]
		registryMu.RUnlock()
		if taken {
			return nil, fmt.Errorf("plugin %s registers KCOP %q, a name cdcd already has; rename it in the plugin", path, r.Name)
		}
		Register(r.Name, r.Factory)
		Document(r.Name, r.Options...)
		names = append(names, r.Name)
	}
	plugins[path] = names
	return names, nil
}

// pluginMatches compares the build information of the plugin at path with this program's, so that
// a mismatch is named before Go refuses the plugin with less to say.
func pluginMatches(path string) error {
	theirs, err := buildinfo.ReadFile(path)
	if err != nil {
		return fmt.Errorf("plugin %s is not a Go plugin this cdcd can read (%v); build it with go build -buildmode=plugin", path, err)
	}
	ours, ok := debug.ReadBuildInfo()
	if !ok {
		return nil
	}
	return compareBuilds(path, ours, theirs)
}

// compareBuilds names the first difference between this program's build and the plugin's that
// keeps Go from loading the plugin.
func compareBuilds(path string, ours, theirs *debug.BuildInfo) error {
	rebuild := fmt.Sprintf("rebuild the plugin with %s, the module versions and build flags `go version -m` lists for this cdcd", ours.GoVersion)
	if theirs.GoVersion != ours.GoVersion {
		return fmt.Errorf("plugin %s was built with %s, this cdcd with %s; %s", path, theirs.GoVersion, ours.GoVersion, rebuild)
	}
	ourDeps := map[string]string{}
	for _, d := range append([]*debug.Module{&ours.Main}, ours.Deps...) {
		ourDeps[d.Path] = moduleVersion(d)
	}
	var differ []string
	for _, d := range theirs.Deps {
		if v, ok := ourDeps[d.Path]; ok && v != moduleVersion(d) && !isDevel(v) && !isDevel(moduleVersion(d)) {
			differ = append(differ, fmt.Sprintf("%s %s (cdcd has %s)", d.Path, moduleVersion(d), v))
		}
	}
	if len(differ) > 0 {
		return fmt.Errorf("plugin %s was built against other module versions: %s; %s", path, strings.Join(differ, ", "), rebuild)
	}
	ourFlags, theirFlags := buildFlags(ours), buildFlags(theirs)
	// Flags that change every package; tags change only some, which the loader's own check names.
	for _, f := range []string{"-trimpath", "-race", "GOAMD64", "GOARM64"} {
		if ourFlags[f] != theirFlags[f] {
			return fmt.Errorf("plugin %s was built with %s=%q, this cdcd with %q; %s", path, f, theirFlags[f], ourFlags[f], rebuild)
		}
	}
	return nil
}

func moduleVersion(m *debug.Module) string {
	if m.Replace != nil {
		return moduleVersion(m.Replace)
	}
	return m.Version
}

func isDevel(v string) bool { return v == "" || v == "(devel)" }

func buildFlags(bi *debug.BuildInfo) map[string]string {
	m := map[string]string{}
	for _, s := range bi.Settings {
		m[s.Key] = s.Value
	}
	return m
}

var differentPackage = regexp.MustCompile(`different version of package (\S+)`)

// explainPluginError turns the plugin loader's error into one that says what to do.
func explainPluginError(path string, err error) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "not implemented"):
		return fmt.Errorf("plugin %s: this cdcd was built without cgo (CGO_ENABLED=0), which cannot load Go plugins; run a cdcd built with CGO_ENABLED=1 (make build), or compile the KCOP in with kcop.Register: %w", path, err)
	case strings.Contains(msg, "already loaded"):
		return fmt.Errorf("plugin %s: a plugin built from the same Go package is loaded already (a process loads each plugin package once); name one path for it, or restart cdcd to load a rebuilt plugin: %w", path, err)
	case differentPackage.MatchString(msg):
		pkg := differentPackage.FindStringSubmatch(msg)[1]
		return fmt.Errorf("plugin %s was built against a different version of package %s than this cdcd: rebuild it from the same cdcd source and module versions, with %s and the same build flags (-trimpath, -race, -tags) as this cdcd (`go version -m` lists them); %w", path, pkg, runtime.Version(), err)
	}
	return fmt.Errorf("plugin %s: %w", path, err)
}
