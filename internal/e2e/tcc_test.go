package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdcd-dev/cdcd/bookmark"
	"github.com/cdcd-dev/cdcd/internal/testenv"
)

// applier runs examples/pgapply as a process.
type applier struct {
	process
	args []string
}

func (a *applier) start() {
	a.t.Helper()
	a.process.start(pgapplyBin, a.args...)
}

// TestTCCApplyExactlyOnceUnderKills: cdcd and the example consumer (examples/pgapply, which applies
// each source transaction to a second database together with its bookmark) are each killed with
// SIGKILL at random moments, at least 20 times, while a multi-table workload commits. At the end the
// second database equals the source, and the consumer's log of applied transactions shows every
// transaction once, whole, in commit order.
func TestTCCApplyExactlyOnceUnderKills(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	for _, mode := range []string{"transactional", "parallel"} {
		t.Run(mode, func(t *testing.T) { tccApplyUnderKills(t, mode) })
	}
}

func tccApplyUnderKills(t *testing.T, delivery string) {
	kills := 20
	if os.Getenv("CDCD_CRASH_KILLS") != "" {
		fmt.Sscan(os.Getenv("CDCD_CRASH_KILLS"), &kills)
	}
	h := newHarness(t, crashDDL, "--set", "kafka.delivery="+delivery, "--set", "kafka.topic_partitions=3")
	targetDSN := testenv.PostgresTargetDSN(t)
	target, err := pgx.Connect(context.Background(), targetDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close(context.Background())
	for _, s := range []string{"CREATE SCHEMA " + h.schema, "SET search_path = " + h.schema, crashDDL,
		"CREATE TABLE cdcd_bookmarks (name text PRIMARY KEY, bookmark text NOT NULL, updated timestamptz NOT NULL DEFAULT now())",
		"CREATE TABLE cdcd_applied (seq bigserial PRIMARY KEY, consumer text NOT NULL, txn text NOT NULL, pos text NOT NULL, bookmark text NOT NULL)"} {
		if _, err := target.Exec(context.Background(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	t.Cleanup(func() { _, _ = target.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+h.schema+" CASCADE") })
	u := targetDSN + "&search_path=" + h.schema
	if !strings.Contains(targetDSN, "?") {
		u = targetDSN + "?search_path=" + h.schema
	}
	app := &applier{process: process{t: t, logPath: filepath.Join(t.TempDir(), "pgapply.log")},
		args: []string{"-brokers", strings.Join(h.brokers, ","), "-commit-topic", h.id + ".commits", "-target", u, "-name", h.id}}
	t.Cleanup(func() {
		app.signal(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("last lines of the pgapply log:\n%s", app.tail(30))
		}
	})

	w := newRecorder(h)
	h.start()
	h.waitStreaming(time.Minute)
	app.start()

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(3, seed))
	killRng := rand.New(rand.NewPCG(4, seed))
	stop := make(chan struct{})
	done := bankWorkload(w, rng, stop)

	for i := range 2 * kills {
		time.Sleep(time.Duration(200+killRng.IntN(1500)) * time.Millisecond)
		if i%2 == 0 {
			h.kill()
			h.start()
		} else {
			app.signal(syscall.SIGKILL)
			app.start()
		}
	}
	close(stop)
	txns := <-done
	t.Logf("%d source transactions committed during %d kills of cdcd and %d of the consumer", txns, kills, kills)
	h.waitDurable(3 * time.Minute)

	// Wait for the consumer to apply everything: the source and target tables agree.
	query := func(conn *pgx.Conn, table string) string {
		var s string
		if err := conn.QueryRow(context.Background(), fmt.Sprintf("SELECT coalesce(string_agg(to_jsonb(t.*)::text, E'\\n' ORDER BY id), '') FROM %s.%s t", h.schema, table)).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		same := true
		for _, tb := range []string{"accounts", "transfers"} {
			same = same && query(h.conn, tb) == query(target, tb)
		}
		if same {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the target never caught up with the source")
		}
		time.Sleep(500 * time.Millisecond)
	}
	h.stop()
	app.signal(syscall.SIGTERM)

	// The order validator: every committed source transaction applied once, whole, in commit order.
	rows, err := target.Query(context.Background(), "SELECT txn, pos FROM "+h.schema+".cdcd_applied ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	var prev bookmark.LSN
	applied := 0
	seen := map[string]bool{}
	for rows.Next() {
		var txn, pos string
		if err := rows.Scan(&txn, &pos); err != nil {
			t.Fatal(err)
		}
		lsn, err := bookmark.ParseLSN(pos)
		if err != nil {
			t.Fatal(err)
		}
		if seen[txn+"@"+pos] {
			t.Errorf("transaction %s at %s applied twice", txn, pos)
		}
		seen[txn+"@"+pos] = true
		if applied > 0 && lsn <= prev {
			t.Errorf("transaction %s at %s applied after one at %s: out of commit order", txn, pos, prev)
		}
		prev = lsn
		applied++
	}
	if want := txns + 1; applied != want { // + the initial snapshot's transaction
		t.Errorf("%d transactions applied, %d committed (+1 snapshot)", applied, txns)
	}
	t.Logf("the target equals the source; %d transactions applied once each, in commit order", applied)
}
