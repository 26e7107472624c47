package e2e

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/cdcd-dev/cdcd/internal/testenv"
)

// burst commits transactions for a while, then waits until the last one has committed, so that no
// transaction is in flight when a server is made to fail.
func burst(b *bank, w *recorder, rng *rand.Rand, d time.Duration) int {
	stop := make(chan struct{})
	done := b.run(w, rng, stop)
	time.Sleep(d)
	close(stop)
	return <-done
}

// alive fails the test when cdcd has exited: faults of the database or the broker are retried.
func (h *harness) alive(after string) {
	h.t.Helper()
	if done, code := h.exited(0); done {
		h.t.Fatalf("cdcd exited with %d after %s; it must retry", code, after)
	}
}

// endFaultWorkload stops a workload running through broker faults, waits until everything it
// committed is durable with cdcd still up, and stops cdcd.
func (h *harness) endFaultWorkload(stop chan struct{}, done <-chan int) {
	h.t.Helper()
	time.Sleep(time.Second)
	close(stop)
	h.t.Logf("%d transactions committed", <-done)
	h.waitDurable(3 * time.Minute)
	h.alive("the broker faults")
	h.stop()
	h.t.Logf("cdcd restarted its pipeline %d times", strings.Count(h.log(), "pipeline failed"))
}

// newFaultHarness starts cdcd streaming the bank tables and returns a recorder on its own
// connection and the seed of the test's randomness.
func newFaultHarness(t *testing.T) (*harness, *recorder, uint64) {
	t.Helper()
	h := newHarness(t, crashDDL)
	h.start()
	h.waitStreaming(time.Minute)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	return h, newOwnRecorder(h), seed
}

// TestPostgresFaultsUnderLoad: while cdcd works through bursts of transactions, its walsender is
// terminated and PostgreSQL is stopped in immediate mode (crash recovery on the next start), three
// times each. cdcd never exits; every committed change arrives once, in order, and the tcc
// delivers exactly the transactions PostgreSQL committed.
func TestPostgresFaultsUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test skipped in -short mode")
	}
	h, w, seed := newFaultHarness(t)
	rng := rand.New(rand.NewPCG(5, seed))
	b := &bank{nextAccount: 1, nextTransfer: 1}
	txns := 0
	for i := range 3 {
		txns += burst(b, w, rng, 1500*time.Millisecond)
		h.exec("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL", h.id)
		h.alive("its walsender was terminated")
		txns += burst(b, w, rng, 1500*time.Millisecond)
		t.Logf("round %d: crashing PostgreSQL", i)
		testenv.Stack(t, "crash", "postgres")
		time.Sleep(time.Second)
		testenv.Stack(t, "up", "postgres")
		h.reconnect()
		w.reconnect()
		h.alive("PostgreSQL crashed")
	}
	txns += burst(b, w, rng, time.Second)
	h.waitDurable(3 * time.Minute)
	h.alive("the faults")
	h.stop()
	t.Logf("%d transactions; cdcd restarted its pipeline %d times", txns, strings.Count(h.log(), "pipeline failed"))
	h.verify(w.events, h.readAll())
	h.checkTCCHistory(w)
}

// TestBrokerKilledUnderLiveWriter: the Kafka broker is killed (SIGKILL) three times while cdcd
// writes a steady workload, and restarted moments later. cdcd never exits; every committed change
// arrives once, in order, and the tcc delivers exactly the transactions PostgreSQL committed.
func TestBrokerKilledUnderLiveWriter(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test skipped in -short mode")
	}
	h, w, seed := newFaultHarness(t)
	stop := make(chan struct{})
	done := bankWorkload(w, rand.New(rand.NewPCG(6, seed)), stop)
	for i := range 3 {
		time.Sleep(time.Duration(1000+rand.IntN(2000)) * time.Millisecond)
		t.Logf("round %d: killing the broker", i)
		testenv.Stack(t, "crash", "kafka")
		time.Sleep(time.Second)
		testenv.Stack(t, "up", "kafka")
		h.alive("the broker was killed")
	}
	h.endFaultWorkload(stop, done)
	h.verify(w.events, h.readAll())
	h.checkTCCHistory(w)
}
