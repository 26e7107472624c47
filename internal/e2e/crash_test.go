package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cdcd-dev/cdcd/bookmark"
	"github.com/cdcd-dev/cdcd/internal/testenv"
)

const crashDDL = `
CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance numeric(14,2) NOT NULL, note text);
CREATE TABLE transfers (id int PRIMARY KEY, from_id int, to_id int, amount numeric(14,2), at timestamptz DEFAULT now());
`

// bankWorkload commits random transactions (new accounts, transfers that insert a transfer and
// update two balances, note updates, deletes) until stop is closed, then sends how many it committed.
// It runs on its own goroutine and connection, so commit order is its program order.
func bankWorkload(w *recorder, rng *rand.Rand, stop <-chan struct{}) <-chan int {
	return (&bank{nextAccount: 1, nextTransfer: 1}).run(w, rng, stop)
}

// bank is the state of a bank workload, so that it can run in bursts.
type bank struct {
	nextAccount, nextTransfer int
	live                      []int
}

func (b *bank) run(w *recorder, rng *rand.Rand, stop <-chan struct{}) <-chan int {
	done := make(chan int, 1)
	go func() {
		txns := 0
		nextAccount, nextTransfer, live := b.nextAccount, b.nextTransfer, b.live
		defer func() {
			b.nextAccount, b.nextTransfer, b.live = nextAccount, nextTransfer, live
			done <- txns
		}()
		for {
			select {
			case <-stop:
				return
			default:
			}
			w.begin()
			for range 1 + rng.IntN(8) {
				switch k := rng.IntN(10); {
				case k < 3 || len(live) < 5:
					w.insert("accounts", "id, owner, balance", nextAccount, fmt.Sprint("owner", nextAccount), fmt.Sprintf("%d.%02d", rng.IntN(10000), rng.IntN(100)))
					live = append(live, nextAccount)
					nextAccount++
				case k < 7:
					from, to := live[rng.IntN(len(live))], live[rng.IntN(len(live))]
					amt := fmt.Sprintf("%d.%02d", rng.IntN(100), rng.IntN(100))
					w.insert("transfers", "id, from_id, to_id, amount", nextTransfer, from, to, amt)
					nextTransfer++
					w.update("accounts", from, "balance = balance - $1::numeric", nil, amt)
					if to != from {
						w.update("accounts", to, "balance = balance + $1::numeric", nil, amt)
					}
				case k < 9:
					w.update("accounts", live[rng.IntN(len(live))], "note = $1", nil, fmt.Sprint("note ", rng.IntN(1000)))
				default:
					i := rng.IntN(len(live))
					w.delete("accounts", live[i])
					live = append(live[:i], live[i+1:]...)
				}
			}
			w.commit()
			txns++
			time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
		}
	}()
	return done
}

// TestCrashRecovery kills cdcd with SIGKILL at random moments (at least 20 times) while a workload
// commits, and restarts the Kafka broker once in the middle; afterwards a read_committed consumer
// sees every committed change exactly once, in commit order per table.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	kills := 20
	if os.Getenv("CDCD_TEST_CRASH_KILLS") != "" {
		fmt.Sscan(os.Getenv("CDCD_TEST_CRASH_KILLS"), &kills)
	}
	h := newHarness(t, crashDDL)
	w := newRecorder(h)
	h.start()
	h.waitStreaming(time.Minute)

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(1, seed))     // the workload's
	killRng := rand.New(rand.NewPCG(2, seed)) // the kill loop's
	stop := make(chan struct{})
	done := bankWorkload(w, rng, stop)

	for i := range kills {
		time.Sleep(time.Duration(300+killRng.IntN(2200)) * time.Millisecond)
		h.kill()
		if i == kills/2 {
			t.Log("restarting the Kafka broker")
			testenv.Stack(t, "down", "kafka")
			h.start() // cdcd starts while Kafka is down and must wait for it
			time.Sleep(2 * time.Second)
			testenv.Stack(t, "up", "kafka")
			continue
		}
		h.start()
	}
	close(stop)
	txns := <-done
	t.Logf("%d transactions committed during %d kills", txns, kills)
	h.waitDurable(3 * time.Minute)
	h.stop()
	log := h.log()
	resumes, failures := strings.Count(log, "resuming after the commit stream"), strings.Count(log, "pipeline failed")
	t.Logf("cdcd resumed from the commit stream %d times; %d pipeline restarts after errors", resumes, failures)
	// Some kills land while cdcd is still starting; most must land while it streams.
	if resumes < kills/2 {
		t.Errorf("cdcd resumed %d times for %d kills: the kills did not land while it streamed", resumes, kills)
	}
	got := h.readAll()
	h.verify(w.events, got)
	n := 0
	for _, evs := range w.events {
		n += len(evs)
	}
	t.Logf("verified %d committed changes", n)
}

// TestSlotNeverConfirmedBeforeKafkaHasTheData: while cdcd is down, a backlog of small transactions
// and then one large transaction are committed; the moment the slot is confirmed past them, cdcd is
// killed (SIGKILL: nothing is flushed on the way out). Whatever the slot confirmed must already be
// readable in Kafka. (Confirming the server's
// keepalive position, which can run ahead of transactions not yet sent, fails this.)
func TestSlotNeverConfirmedBeforeKafkaHasTheData(t *testing.T) {
	h := newHarness(t, "CREATE TABLE big (id int PRIMARY KEY, v text)", "--set", "source.postgres.snapshot=never")
	h.exec("CREATE PUBLICATION " + h.id + " FOR TABLE big")
	h.exec("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", h.id)
	w := newRecorder(h)
	confirmedPast := func(end string) {
		t.Helper()
		want, _ := bookmark.ParseLSN(end)
		deadline := time.Now().Add(3 * time.Minute)
		for {
			var confirmed string
			if err := h.conn.QueryRow(context.Background(), "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", h.id).Scan(&confirmed); err != nil {
				t.Fatal(err)
			}
			if got, _ := bookmark.ParseLSN(confirmed); got >= want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the slot never passed %s", end)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	currentLSN := func() string {
		var end string
		if err := h.conn.QueryRow(context.Background(), "SELECT pg_current_wal_lsn()::text").Scan(&end); err != nil {
			t.Fatal(err)
		}
		return end
	}
	for i := range 200 {
		w.begin()
		for j := range 100 {
			w.insert("big", "id, v", i*100+j+1, "small")
		}
		w.commit()
	}
	end := currentLSN()
	h.start()
	confirmedPast(end)
	h.kill()

	w.begin()
	w.exec("INSERT INTO big SELECT g, md5(g::text) FROM generate_series(20001, 220000) g")
	w.commit()
	for _, row := range w.rows("SELECT to_jsonb(big.*)::text FROM big WHERE id > 20000 ORDER BY id") {
		w.events["big"] = append(w.events["big"], expected{op: "c", key: keyOf(row), after: row})
	}
	end = currentLSN()
	h.start()
	confirmedPast(end)
	h.kill()
	h.verify(w.events, h.readAll())
}
