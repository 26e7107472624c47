package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/cdcd-dev/cdcd/change"
)

// buildPlugin builds the Go plugin in dir (a package of the module rooted at root) with this test
// binary's build flags plus extra, and returns its path.
func buildPlugin(t *testing.T, root, pkg string, extra ...string) string {
	t.Helper()
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		t.Fatal("no build information in the test binary")
	}
	args := []string{"build", "-buildmode=plugin"}
	for _, s := range bi.Settings {
		if s.Key == "-race" && s.Value == "true" {
			args = append(args, "-race")
		}
	}
	out := filepath.Join(t.TempDir(), "kv.so")
	args = append(append(args, extra...), "-o", out, pkg)
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), args...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return out
}

// TestKCOPPlugin: examples/kcop-plugin, built as a Go plugin, loads from a kcops entry and its KCOP
// writes records; loading it again registers nothing twice.
func TestKCOPPlugin(t *testing.T) {
	path := buildPlugin(t, "../..", "./examples/kcop-plugin")
	for range 2 {
		k, err := buildKCOP([]map[string]any{{"type": "kv", "plugin": path, "topic": "lines"}})
		if err != nil {
			t.Fatal(err)
		}
		tbl := &change.Table{Schema: "public", Name: "t", Columns: []change.Column{{Name: "id", Type: "int4", Key: true}, {Name: "v", Type: "text"}}, KeyIndexes: []int{0}}
		recs, err := k.Process(context.Background(), &change.Change{Op: change.Insert, Table: tbl, Txn: &change.Txn{ID: "1"},
			After: change.Row{{V: int64(7)}, {Kind: change.Null}}}, nil)
		if err != nil || len(recs) != 1 || recs[0].Topic != "lines" || string(recs[0].Value) != "c public.t id=7 v=NULL" {
			t.Fatalf("records %+v, %v", recs, err)
		}
	}
	if _, err := buildKCOP([]map[string]any{{"type": "kv", "plugin": path}}); err == nil || !strings.Contains(err.Error(), "option topic is empty") {
		t.Errorf("the plugin's own option check: err = %v", err)
	}
}

// TestKCOPPluginMismatch: plugins Go cannot load into this cdcd are refused with what differs and
// how to rebuild, before the loader's own terse message where cdcd can tell.
func TestKCOPPluginMismatch(t *testing.T) {
	// Another build flag.
	path := buildPlugin(t, "../..", "./examples/kcop-plugin", "-trimpath")
	_, err := buildKCOP([]map[string]any{{"type": "kv", "plugin": path, "topic": "lines"}})
	if err == nil || !strings.Contains(err.Error(), `-trimpath="true", this cdcd with ""`) || !strings.Contains(err.Error(), "rebuild the plugin with "+runtime.Version()) {
		t.Errorf("a plugin built with -trimpath: err = %v", err)
	}

	// Another version of cdcd itself: a copy of the source whose kcop package has one more function.
	src := t.TempDir()
	deps, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "list", "-deps", "-f", "{{if not .Standard}}{{.Dir}}{{end}}", "../../examples/kcop-plugin").Output()
	if err != nil {
		t.Fatal(err)
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range strings.Fields(string(deps)) {
		rel, err := filepath.Rel(root, dir)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue // a module from the module cache
		}
		// The plugin under a path of its own: a process loads each plugin package once.
		copyDir(t, dir, filepath.Join(src, strings.Replace(rel, "kcop-plugin", "kcop-plugin-v2", 1)))
	}
	for _, f := range []string{"go.mod", "go.sum"} {
		copyFile(t, filepath.Join("../..", f), filepath.Join(src, f))
	}
	if err := os.WriteFile(filepath.Join(src, "kcop", "newer.go"), []byte("package kcop\n\n// Newer is in this version only.\nfunc Newer() int { return 1 }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path = buildPlugin(t, src, "./examples/kcop-plugin-v2")
	_, err = buildKCOP([]map[string]any{{"type": "kv", "plugin": path, "topic": "lines"}})
	if err == nil || !strings.Contains(err.Error(), "different version of package github.com/cdcd-dev/cdcd/") || !strings.Contains(err.Error(), "rebuild it from the same cdcd source") {
		t.Errorf("a plugin built against another cdcd: err = %v", err)
	}

	// Not a plugin at all, and no file.
	notPlugin := filepath.Join(t.TempDir(), "x.so")
	if err := os.WriteFile(notPlugin, []byte("not an ELF file"), 0o600); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{notPlugin: "is not a Go plugin", "/nonexistent/kv.so": "no such file"} {
		if _, err := buildKCOP([]map[string]any{{"type": "kv", "plugin": p}}); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "kcops[0]") {
			t.Errorf("plugin %s: err = %v, want %q", p, err, want)
		}
	}
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		copyFile(t, filepath.Join(from, e.Name()), filepath.Join(to, e.Name()))
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
