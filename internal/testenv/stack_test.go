package testenv

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"testing"
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
