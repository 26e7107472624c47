package e2e

import (
	"context"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cdcd-dev/cdcd/internal/testenv"
)

// TestPostgresTLS: cdcd reads PostgreSQL over TLS with sslmode=verify-full. validate names each TLS
// failure (an untrusted CA, a host the certificate is not for) with its fix, and cdcd run stops on
// one instead of retrying for ever. With good settings the server itself reports every cdcd
// connection, the walsender included, as TLS; a walsender terminated mid-workload reconnects over
// TLS; and the tcc delivers exactly the transactions PostgreSQL committed.
func TestPostgresTLS(t *testing.T) {
	dsn := testenv.PostgresTLSDSN(t)
	h := newHarnessOn(t, dsn, crashDDL)
	good, err := os.ReadFile(h.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	withDSN := func(change func(u *url.URL, q url.Values)) {
		edited := testenv.EditDSN(t, dsn, change)
		cfg := strings.Replace(string(good), "dsn: "+dsn+"\n", "dsn: "+edited+"\n", 1)
		if cfg == string(good) {
			t.Fatal("the harness's configuration does not hold the DSN")
		}
		if err := os.WriteFile(h.cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		change func(u *url.URL, q url.Values)
		want   []string
	}{
		{"untrusted CA", func(_ *url.URL, q url.Values) {
			q.Set("sslrootcert", testenv.NewCA(t, "a CA PostgreSQL does not use").File)
		},
			[]string{"PostgreSQL's certificate is not signed by a CA cdcd trusts", "set sslrootcert in source.postgres.dsn"}},
		{"wrong server name", func(u *url.URL, _ url.Values) { u.Host = strings.Replace(u.Host, "localhost", "127.0.0.1", 1) },
			[]string{"PostgreSQL's certificate is for localhost", "not for 127.0.0.1", "as the host in source.postgres.dsn"}},
	} {
		withDSN(tc.change)
		out, err := exec.Command(cdcdBin, "validate", "-c", h.cfgPath).CombinedOutput()
		for _, want := range tc.want {
			if err == nil || !strings.Contains(string(out), want) {
				t.Errorf("%s: validate (%v) does not say %q:\n%s", tc.name, err, want, out)
			}
		}
	}
	// cdcd run stops on an untrusted certificate with the same words; waiting would not help.
	withDSN(func(_ *url.URL, q url.Values) { q.Set("sslrootcert", testenv.NewCA(t, "another CA").File) })
	h.start()
	if done, code := h.exited(time.Minute); !done || code == 0 {
		t.Fatalf("cdcd run with an untrusted certificate: exited %v with %d, want a failure", done, code)
	}
	if !strings.Contains(h.log(), "set sslrootcert in source.postgres.dsn") {
		t.Errorf("cdcd run does not name sslrootcert:\n%s", h.proc.tail(20))
	}

	if err := os.WriteFile(h.cfgPath, good, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(cdcdBin, "validate", "-c", h.cfgPath).CombinedOutput()
	if err != nil {
		t.Fatalf("validate over TLS: %v\n%s", err, out)
	}
	h.start()
	h.waitStreaming(time.Minute)
	w := newOwnRecorder(h)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	stop := make(chan struct{})
	done := bankWorkload(w, rand.New(rand.NewPCG(14, seed)), stop)
	time.Sleep(2 * time.Second)

	// The server's own view: every connection cdcd holds is encrypted, the walsender included.
	rows, err := h.conn.Query(context.Background(), `SELECT a.backend_type, s.ssl, coalesce(s.version, '')
		FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid
		WHERE a.application_name LIKE 'cdcd (pid %'`)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	for rows.Next() {
		var kind, version string
		var ssl bool
		if err := rows.Scan(&kind, &ssl, &version); err != nil {
			t.Fatal(err)
		}
		if !ssl {
			t.Errorf("a %s connection of cdcd is not encrypted", kind)
		}
		kinds[kind] = true
		t.Logf("cdcd %s connection: ssl %v %s", kind, ssl, version)
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	if !kinds["walsender"] || !kinds["client backend"] {
		t.Errorf("cdcd's connections seen: %v; want a walsender and a client backend", kinds)
	}

	h.exec("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL", h.id)
	h.waitStreaming(time.Minute)
	h.endFaultWorkload(stop, done)
	h.verify(w.events, h.readAll())
	h.checkTCCHistory(w)
}
