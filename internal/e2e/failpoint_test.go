package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tccHistory reads the whole commit stream through the tcc and returns the ids of the transactions
// it delivers (snapshots as "snapshot"), in order, and their records by table, in source order.
func (h *harness) tccHistory() ([]string, map[string][]consumed) {
	h.t.Helper()
	want, prev := 0, uint64(0)
	for _, c := range h.commitRecords() {
		if c.Group == prev {
			// A commit record written again (a retried write across a broker failure): the tcc
			// passes over it, since it vouches for what the one before did.
			h.t.Logf("commit group %d appears again", c.Group)
			continue
		}
		want, prev = want+len(c.Txns), c.Group
	}
	var ids []string
	byTable := map[string][]consumed{}
	var ends map[string]string
	if h.oracle {
		if ends = h.commitEnds(); len(ends) == 0 {
			h.t.Error("PostgreSQL decoded no commit for the oracle slot")
		}
	}
	for _, tx := range drain(h.t, newTCC(h.t, h), want) {
		if tx.Last {
			ids = append(ids, tx.ID)
			if end, ok := ends[tx.ID]; ok && end != tx.End {
				h.t.Errorf("transaction %s ends at %s in the commit stream; PostgreSQL's commit record ends at %s", tx.ID, tx.End, end)
			} else if ends != nil && !ok && !tx.Snapshot {
				h.t.Errorf("transaction %s (ending at %s) is not among the transactions PostgreSQL decoded", tx.ID, tx.End)
			}
		}
		for _, op := range tx.Ops {
			headers := map[string]string{}
			for _, hd := range op.Headers {
				headers[hd.Key] = string(hd.Value)
			}
			h.collect(byTable, op.Topic, op.Partition, op.Offset, op.Key, op.Value, headers)
		}
	}
	return ids, byTable
}

// watchCommits makes PostgreSQL itself record, from now on, where each transaction's commit record
// ends: a second logical slot with the contrib test_decoding plugin, read back by commitEnds.
func (h *harness) watchCommits() {
	h.t.Helper()
	h.exec("SELECT pg_create_logical_replication_slot($1, 'test_decoding')", h.id+"_oracle")
	h.oracle = true
	h.t.Cleanup(func() {
		conn := h.connect()
		defer conn.Close(context.Background())
		_, _ = conn.Exec(context.Background(), "SELECT pg_drop_replication_slot($1)", h.id+"_oracle")
	})
}

// commitEnds maps each transaction id (as pgoutput names it) to the end of its commit record, as
// PostgreSQL's logical decoding reports it.
func (h *harness) commitEnds() map[string]string {
	h.t.Helper()
	rows, err := h.conn.Query(context.Background(), `SELECT lsn::text, xid::text FROM pg_logical_slot_peek_changes($1, NULL, NULL,
		'include-xids', '1', 'skip-empty-xacts', '1') WHERE data LIKE 'COMMIT%'`, h.id+"_oracle")
	if err != nil {
		h.t.Fatal(err)
	}
	defer rows.Close()
	ends := map[string]string{}
	for rows.Next() {
		var lsn, xid string
		if err := rows.Scan(&lsn, &xid); err != nil {
			h.t.Fatal(err)
		}
		ends[xid] = lsn
	}
	if err := rows.Err(); err != nil {
		h.t.Fatal(err)
	}
	return ends
}

// checkTCCHistory compares what the tcc delivers with what PostgreSQL committed: the transactions
// (their xids, in commit order, after the snapshots) and every change in its place.
func (h *harness) checkTCCHistory(w *recorder) {
	h.t.Helper()
	ids, byTable := h.tccHistory()
	var got []string
	for _, id := range ids {
		if id != "snapshot" {
			got = append(got, id)
		}
	}
	if strings.Join(got, ",") != strings.Join(w.xids, ",") {
		n := 0
		for n < min(len(got), len(w.xids)) && got[n] == w.xids[n] {
			n++
		}
		h.t.Errorf("the tcc delivered %d transactions, PostgreSQL committed %d; they part at #%d: tcc %v, source %v",
			len(got), len(w.xids), n, got[n:min(n+5, len(got))], w.xids[n:min(n+5, len(w.xids))])
	}
	h.verify(w.events, byTable)
}

// waitFired waits until cdcd has hit the failpoint and died of it.
func (h *harness) waitFired(name string, within time.Duration) {
	h.t.Helper()
	done, code := h.exited(within)
	if !done {
		h.t.Fatalf("cdcd still runs %v after it was armed to die at %s", within, name)
	}
	if !strings.Contains(h.log(), "failpoint "+name+" fired") || code != -1 {
		h.t.Fatalf("cdcd exited with %d without its failpoint %s firing:\n%s", code, name, h.proc.tail(30))
	}
}

// TestCrashAtEachWindow kills cdcd (SIGKILL, from inside, at the exact instant) between the data
// records and the commit record, between the commit record and Kafka's commit, between Kafka's
// commit and the slot's confirmation, in both delivery modes, and during a SIGTERM shutdown. After a
// restart every committed change arrives once (read_committed) and the tcc delivers exactly the
// transactions PostgreSQL committed, in commit order.
func TestCrashAtEachWindow(t *testing.T) {
	for _, delivery := range []string{"transactional", "parallel"} {
		for _, fp := range []string{"writer.before-commit-record", "writer.before-kafka-commit", "writer.before-source-ack"} {
			t.Run(delivery+"/"+fp, func(t *testing.T) { crashAt(t, delivery, fp) })
		}
	}
	t.Run("transactional/cdcd.shutdown", func(t *testing.T) { crashAt(t, "transactional", "cdcd.shutdown") })
}

func crashAt(t *testing.T, delivery, fp string) {
	h := newHarness(t, crashDDL, "--set", "kafka.delivery="+delivery, "--set", "kafka.topic_partitions=3")
	w := newOwnRecorder(h)
	h.env = []string{"FAILPOINTS=" + fp + "=kill@5"}
	if fp == "cdcd.shutdown" {
		h.env = []string{"FAILPOINTS=" + fp + "=kill"}
	}
	h.start()
	h.waitStreaming(time.Minute)
	h.watchCommits()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	stop := make(chan struct{})
	done := bankWorkload(w, rand.New(rand.NewPCG(3, seed)), stop)
	if fp == "cdcd.shutdown" {
		time.Sleep(2 * time.Second)
		h.proc.send(syscall.SIGTERM) // the shutdown dies at the failpoint
	}
	h.waitFired(fp, 2*time.Minute)
	h.env = nil
	h.start()
	h.waitStreaming(time.Minute)
	time.Sleep(time.Second)
	close(stop)
	t.Logf("%d transactions committed", <-done)
	h.waitDurable(2 * time.Minute)
	h.stop()
	h.checkTCCHistory(w)
}

// TestCrashInTheMiddleOfALargeTransaction: cdcd dies while a 200,000-row transaction is half
// written; after a restart it arrives whole and once, between its neighbours.
func TestCrashInTheMiddleOfALargeTransaction(t *testing.T) {
	h := newHarness(t, "CREATE TABLE big (id int PRIMARY KEY, v text)", "--set", "kafka.topic_partitions=2")
	w := newOwnRecorder(h)
	h.env = []string{"FAILPOINTS=writer.change=kill@100000"}
	h.start()
	h.waitStreaming(time.Minute)
	w.begin()
	w.insert("big", "id, v", 0, "before")
	w.commit()
	w.begin()
	w.exec("INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 200000) g")
	for _, row := range w.rows("SELECT to_jsonb(big.*)::text FROM big WHERE id > 0 ORDER BY id") {
		w.pending["big"] = append(w.pending["big"], expected{op: "c", key: keyOf(row), after: row})
	}
	w.commit()
	w.begin()
	w.insert("big", "id, v", 200001, "after")
	w.commit()
	h.waitFired("writer.change", 3*time.Minute)
	h.env = nil
	h.start()
	h.waitDurable(3 * time.Minute)
	h.stop()
	h.checkTCCHistory(w)
}

// TestSnapshotUnderWritesAndACrash: the initial snapshot copies 20,000 rows in chunks of 1,000, in
// four key ranges read at once, while writers keep committing to the same rows, and cdcd dies with
// SIGKILL three times: as it hands the eighth chunk's commit on, after reading chunks and before
// writing their watermarks, and as it hands on the second chunk after a restart. Each restart
// resumes the copy after the last durable chunk: every chunk of every table arrives exactly once,
// numbered from 1, the last one marked complete, each row is copied once, and the tcc's history,
// replayed (a snapshot read or an insert sets a row, an update replaces it, a delete removes it),
// leaves exactly the rows PostgreSQL holds.
func TestSnapshotUnderWritesAndACrash(t *testing.T) {
	h := newHarness(t, crashDDL, "--set", "source.postgres.snapshot_chunk_rows=1000", "--set", "source.postgres.snapshot_parallel=4")
	h.exec("INSERT INTO accounts SELECT g, 'owner' || g, g, NULL FROM generate_series(1000001, 1020000) g")
	h.exec("ANALYZE accounts") // read in four key ranges at once
	w := newOwnRecorder(h)
	stop := make(chan struct{})
	done := bankWorkload(w, rand.New(rand.NewPCG(4, uint64(time.Now().UnixNano()))), stop)
	durableChunks := func() int {
		n := 0
		for _, cr := range h.commitRecords() {
			for _, tx := range cr.Txns {
				if tx.Copy != nil {
					n++
				}
			}
		}
		return n
	}
	var firstLog string
	var durable []int
	for i, kill := range []string{"postgres.snapshot-chunk-commit=kill@8", "postgres.snapshot-chunk-read=kill@3", "postgres.snapshot-chunk-commit=kill@2"} {
		h.env = []string{"FAILPOINTS=" + kill + ";postgres.snapshot-row=sleep:100us"}
		h.start()
		name, _, _ := strings.Cut(kill, "=")
		h.waitFired(name, 2*time.Minute)
		if i == 0 {
			firstLog = h.log()
		} else if !strings.Contains(h.proc.runLog(), `msg="snapshot resumed"`) {
			t.Errorf("restart %d did not resume the copy", i)
		}
		durable = append(durable, durableChunks())
	}
	h.env = []string{"FAILPOINTS=postgres.snapshot-row=sleep:200us"} // a slow copy, so writes overlap it
	h.start()
	h.waitStreaming(2 * time.Minute)
	if !strings.Contains(h.proc.runLog(), `msg="snapshot resumed"`) || durable[0] == 0 {
		t.Errorf("the restart did not resume the copy (chunks durable at each kill: %v)", durable)
	}
	time.Sleep(time.Second)
	close(stop)
	t.Logf("%d transactions committed during the snapshot; chunks durable at each kill: %v", <-done, durable)
	h.waitDurable(2 * time.Minute)
	h.stop()

	state := map[string]map[string]json.RawMessage{} // table/key -> row
	chunks := map[string][]int64{}                   // table -> chunk numbers in order
	complete := map[string]bool{}
	copies := map[string]int{} // table/key -> snapshot reads
	c := newTCC(t, h)
	want := 0
	for _, cr := range h.commitRecords() {
		want += len(cr.Txns)
	}
	for _, tx := range drain(t, c, want) {
		if tx.Copy != nil && tx.First {
			if complete[tx.Copy.Table] {
				t.Errorf("chunk %d of %s arrives after the copy was complete", tx.Copy.Chunk, tx.Copy.Table)
			}
			chunks[tx.Copy.Table] = append(chunks[tx.Copy.Table], tx.Copy.Chunk)
			complete[tx.Copy.Table] = tx.Copy.Complete
		}
		for _, op := range tx.Ops {
			if op.Value == nil {
				continue // a tombstone
			}
			var env envelope
			if err := json.Unmarshal(op.Value, &env); err != nil {
				t.Fatal(err)
			}
			k := op.Topic + "/" + string(op.Key)
			switch env.Op {
			case "r", "c", "u":
				state[k] = env.After
				if env.Op == "r" {
					copies[k]++
				}
			case "d":
				delete(state, k)
			}
		}
	}
	for k, n := range copies {
		if n > 1 {
			t.Errorf("row %s was copied %d times", k, n)
		}
	}
	if !regexp.MustCompile(fmt.Sprintf(`msg="snapshot reads the table in key ranges" .*table=%s\.accounts ranges=4`, h.id)).MatchString(firstLog) {
		t.Error("accounts was not read in four key ranges")
	}
	for _, table := range []string{"accounts", "transfers"} {
		name := h.id + "." + table
		got := chunks[name]
		for i, n := range got {
			if n != int64(i+1) {
				t.Errorf("%s: chunks arrived as %v; want each once, from 1", table, got)
				break
			}
		}
		if !complete[name] {
			t.Errorf("%s: no chunk marks the copy complete (chunks %v)", table, got)
		}
	}
	if n := len(chunks[h.id+".accounts"]); n < 20 {
		t.Errorf("accounts was copied in %d chunks; 20,000 rows in chunks of 1,000 make at least 20", n)
	}
	for _, table := range []string{"accounts", "transfers"} {
		types := h.columnTypes(table)
		rows := w.rows(fmt.Sprintf("SELECT to_jsonb(%s.*)::text FROM %s", table, table))
		n := 0
		for k := range state {
			if strings.HasPrefix(k, h.id+"."+table+"/") {
				n++
			}
		}
		if n != len(rows) {
			t.Errorf("%s: the tcc's history leaves %d rows, the table holds %d", table, n, len(rows))
		}
		for _, row := range rows {
			got, ok := state[h.id+"."+table+"/"+keyOf(row)]
			if !ok {
				t.Errorf("%s: row %s is missing from the tcc's history", table, keyOf(row))
				continue
			}
			for col, v := range row {
				if err := sameValue(types[col], v, got[col]); err != nil {
					t.Errorf("%s %s column %s: %v", table, keyOf(row), col, err)
				}
			}
		}
	}
}

// TestKafkaTransactionTimeoutIsNotAFence: a source transaction stalls longer than
// kafka.transaction_timeout, so the coordinator aborts its Kafka transaction. cdcd must say so (and
// which setting to raise), not that it was fenced, restart from the last durable position, and
// deliver everything once.
func TestKafkaTransactionTimeoutIsNotAFence(t *testing.T) {
	h := newHarness(t, "CREATE TABLE t (id int PRIMARY KEY, v text)", "--set", "kafka.transaction_timeout=2s")
	w := newOwnRecorder(h)
	// The fourth change (the third of the middle transaction, when the first one's records are
	// written, so the coordinator's clock runs) stalls past the timeout, and past the coordinator's
	// check for expired transactions (every 10 s by default).
	h.env = []string{"FAILPOINTS=writer.change=sleep:15s@4"}
	h.start()
	h.waitStreaming(time.Minute)
	w.begin()
	w.insert("t", "id, v", 1, "first")
	w.commit()
	h.waitDurable(time.Minute) // the stalled transaction starts a group of its own
	w.begin()
	for i := 2; i <= 6; i++ {
		w.insert("t", "id, v", i, "stalled")
	}
	w.commit()
	w.begin()
	w.insert("t", "id, v", 7, "last")
	w.commit()
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(h.log(), "pipeline failed; restarting from the last durable position") {
		if time.Now().After(deadline) {
			t.Fatal("cdcd never restarted its pipeline after the timed-out transaction")
		}
		if done, code := h.exited(0); done {
			t.Fatalf("cdcd exited with %d instead of restarting", code)
		}
		time.Sleep(200 * time.Millisecond)
	}
	h.waitDurable(time.Minute)
	h.stop()
	log := h.log()
	if !strings.Contains(log, "kafka.transaction_timeout") || strings.Contains(log, "was fenced") {
		t.Errorf("the log does not name kafka.transaction_timeout, or calls the timeout a fence:\n%s", h.proc.tail(20))
	}
	h.verify(w.events, h.readAll())
	h.checkTCCHistory(w)
}
