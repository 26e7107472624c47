package testenv

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cdcd-dev/cdcd/internal/config"
)

// TestStackSchemaRegistry proves the stack's schema registry speaks the Confluent API the Avro KCOP
// will use: register an Avro schema under a subject, read it back by its id, and find the subject.
func TestStackSchemaRegistry(t *testing.T) {
	base := RegistryURL(t)
	subject := fmt.Sprintf("stack-probe-%06d-value", rand.IntN(1_000_000))
	schema := `{"type":"record","name":"Probe","fields":[{"name":"id","type":"long"}]}`
	body, _ := json.Marshal(map[string]string{"schema": schema})

	var registered struct{ ID int }
	call(t, http.MethodPost, base+"/subjects/"+subject+"/versions", body, &registered)
	if registered.ID <= 0 {
		t.Fatalf("registering returned id %d", registered.ID)
	}
	t.Cleanup(func() { call(t, http.MethodDelete, base+"/subjects/"+subject, nil, nil) })

	var fetched struct{ Schema string }
	call(t, http.MethodGet, fmt.Sprintf("%s/schemas/ids/%d", base, registered.ID), nil, &fetched)
	var got, want any
	if err := json.Unmarshal([]byte(fetched.Schema), &got); err != nil {
		t.Fatalf("schema %d is not JSON: %q", registered.ID, fetched.Schema)
	}
	_ = json.Unmarshal([]byte(schema), &want)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("schema %d = %s, want %s", registered.ID, fetched.Schema, schema)
	}

	var again struct{ ID int }
	call(t, http.MethodPost, base+"/subjects/"+subject, body, &again)
	if again.ID != registered.ID {
		t.Errorf("looking the schema up under its subject gave id %d, want %d", again.ID, registered.ID)
	}
}

func call(t *testing.T, method, url string, body []byte, out any) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("%s %s: %s: %s", method, url, resp.Status, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, url, err, data)
		}
	}
}

// TestStackWritesOnlyItsDirectory: installing the servers leaves nothing in the checkout outside
// the stack directory (Maven's unpack goal once left a "${project.basedir}" folder there, and then
// skipped every later unpack while it existed).
func TestStackWritesOnlyItsDirectory(t *testing.T) {
	RegistryURL(t) // the stack, registry included, is installed
	for _, stray := range []string{"${project.basedir}", "target"} {
		if _, err := os.Stat(filepath.Join(RepoRoot(), stray)); err == nil {
			t.Errorf("the stack left %q in the checkout", stray)
		}
	}
}

// TestStackEnvSharesNoNameWithASetting: what `scripts/stack.sh env` exports never names a cdcd
// setting (CDCD_KAFKA_BROKERS once did, and silently overrode the YAML), and stays in the
// CDCD_STACK_ namespace cdcd leaves alone.
func TestStackEnvSharesNoNameWithASetting(t *testing.T) {
	settings := map[string]bool{}
	for _, k := range config.Keys() {
		settings[config.EnvName(k)] = true
	}
	out := Stack(t, "env")
	n := 0
	for _, line := range strings.Split(out, "\n") {
		name, _, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(line), "export "), "=")
		if !ok {
			continue
		}
		n++
		if settings[name] || !strings.HasPrefix(name, "CDCD_STACK_") {
			t.Errorf("scripts/stack.sh env exports %s, outside CDCD_STACK_* (a cdcd setting: %v)", name, settings[name])
		}
	}
	if n == 0 {
		t.Fatalf("scripts/stack.sh env exported nothing:\n%s", out)
	}
}

// TestDemoNeedsNoRegistry: `make demo` starts only the servers it uses, so a machine without the
// schema registry's Java 21 runs it.
func TestDemoNeedsNoRegistry(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	cmd := exec.Command("make", "-n", "demo")
	cmd.Dir = RepoRoot()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("make -n demo: %v", err)
	}
	var starts []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "stack.sh up") {
			starts = append(starts, strings.TrimSpace(line))
		}
	}
	if len(starts) == 0 {
		t.Fatalf("make demo starts no servers:\n%s", out)
	}
	for _, s := range starts {
		if strings.HasSuffix(s, "stack.sh up") || strings.Contains(s, "registry") {
			t.Errorf("make demo starts the schema registry (%s); it does not use it", s)
		}
	}
}
