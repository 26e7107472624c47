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

// newTarget makes the harness's schema, its tables (ddl) and pgapply's tables in the target database,
// and returns a connection to it and the DSN pgapply uses.
func newTarget(t *testing.T, h *harness, ddl string) (*pgx.Conn, string) {
	t.Helper()
	targetDSN := testenv.PostgresTargetDSN(t)
	target, err := pgx.Connect(context.Background(), targetDSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { target.Close(context.Background()) })
	for _, s := range []string{"CREATE SCHEMA " + h.schema, "SET search_path = " + h.schema, ddl,
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
	return target, u
}

// newApplier prepares examples/pgapply for the harness's commit stream and the target.
func newApplier(t *testing.T, h *harness, targetDSN string, extra ...string) *applier {
	t.Helper()
	app := &applier{process: process{t: t, logPath: filepath.Join(logDir(t), "pgapply.log")},
		args: append([]string{"-brokers", strings.Join(h.brokers, ","), "-commit-topic", h.id + ".commits", "-target", targetDSN, "-name", h.id}, extra...)}
	t.Cleanup(func() {
		app.signal(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("last lines of the pgapply log:\n%s", app.tail(30))
		}
	})
	return app
}

// waitSame waits until the target's tables hold what the source's do, as PostgreSQL renders them.
func (h *harness) waitSame(target *pgx.Conn, tables ...string) {
	h.t.Helper()
	query := func(conn *pgx.Conn, table string) string {
		var s string
		if err := conn.QueryRow(context.Background(), fmt.Sprintf("SELECT coalesce(string_agg(to_jsonb(t.*)::text, E'\\n' ORDER BY id), '') FROM %s.%s t", h.schema, table)).Scan(&s); err != nil {
			h.t.Fatal(err)
		}
		return s
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		same := true
		for _, tb := range tables {
			same = same && query(h.conn, tb) == query(target, tb)
		}
		if same {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("the target never caught up with the source")
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// checkApplied is the order validator: pgapply's log of applied transactions holds every committed
// source transaction once, whole, in commit order; want counts them.
func checkApplied(t *testing.T, target *pgx.Conn, schema string, want int) {
	t.Helper()
	rows, err := target.Query(context.Background(), "SELECT txn, pos FROM "+schema+".cdcd_applied ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
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
	if applied != want {
		t.Errorf("%d transactions applied, %d committed", applied, want)
	}
	t.Logf("the target equals the source; %d transactions applied once each, in commit order", applied)
}

func tccApplyUnderKills(t *testing.T, delivery string) {
	kills := 20
	if os.Getenv("CDCD_TEST_CRASH_KILLS") != "" {
		fmt.Sscan(os.Getenv("CDCD_TEST_CRASH_KILLS"), &kills)
	}
	h := newHarness(t, crashDDL, "--set", "kafka.delivery="+delivery, "--set", "kafka.topic_partitions=3")
	target, targetDSN := newTarget(t, h, crashDDL)
	app := newApplier(t, h, targetDSN)

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
	h.waitSame(target, "accounts", "transfers")
	h.stop()
	app.signal(syscall.SIGTERM)
	checkApplied(t, target, h.schema, txns+h.snapshotTxns()) // + the snapshot's chunks
	if t.Failed() {
		diagnoseApplied(t, h, target, w.xids)
	}
}

// diagnoseApplied says which of the source's transactions the commit stream and pgapply's log
// lack, and where the missing ones sit.
func diagnoseApplied(t *testing.T, h *harness, target *pgx.Conn, source []string) {
	t.Helper()
	inStream := map[string]string{}
	for _, cr := range h.commitRecords() {
		for i, tx := range cr.Txns {
			inStream[tx.ID] = fmt.Sprintf("group %d #%d of %d (changes %d, records %d)", cr.Group, i, len(cr.Txns), tx.Changes, tx.Records)
		}
	}
	rows, err := target.Query(context.Background(), "SELECT txn FROM "+h.schema+".cdcd_applied ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	applied, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	was := map[string]bool{}
	for _, x := range applied {
		was[x] = true
	}
	missing := 0
	for i, x := range source {
		if !was[x] {
			missing++
			if missing <= 10 {
				where, ok := inStream[x]
				t.Logf("source transaction #%d (xid %s) not applied; in the commit stream: %v %s", i, x, ok, where)
			}
		}
	}
	t.Logf("%d of %d source transactions not applied; the commit stream holds %d transactions", missing, len(source), len(inStream))
}

// TestPgapplyKilledInsideALargeTransaction: the consumer dies between two chunks of a 30,000-row
// transaction, then in the middle of a chunk; each time it restarts from the bookmark of the last
// transaction it committed and applies the large one again, whole, once.
func TestPgapplyKilledInsideALargeTransaction(t *testing.T) {
	const ddl = "CREATE TABLE big (id int PRIMARY KEY, v text)"
	h := newHarness(t, ddl)
	target, targetDSN := newTarget(t, h, ddl)
	h.start()
	h.waitStreaming(time.Minute)
	h.exec("INSERT INTO big VALUES (0, 'before')")
	h.exec("INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 30000) g")
	h.exec("INSERT INTO big VALUES (30001, 'after')")
	h.waitDurable(2 * time.Minute)

	app := newApplier(t, h, targetDSN, "-max-chunk", "4000")
	for _, fp := range []string{"pgapply.after-chunk=kill@3", "pgapply.apply-op=kill@18001"} {
		app.env = []string{"FAILPOINTS=" + fp}
		app.start()
		name, _, _ := strings.Cut(fp, "=")
		done, _ := app.exited(2 * time.Minute)
		if !done || !strings.Contains(app.log(), "failpoint "+name+" fired") {
			t.Fatalf("pgapply did not die at %s:\n%s", name, app.tail(20))
		}
		var n int
		if err := target.QueryRow(context.Background(), "SELECT count(*) FROM "+h.schema+".big").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Fatalf("after dying inside the large transaction the target holds %d rows of big, want the 1 before it", n)
		}
	}
	app.env = nil
	app.start()
	h.waitSame(target, "big")
	h.stop()
	app.signal(syscall.SIGTERM)
	checkApplied(t, target, h.schema, 3+h.snapshotTxns()) // the row before, the large transaction, the row after, and the snapshot
}
