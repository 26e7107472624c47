package e2e

import (
	"fmt"
	"math/rand/v2"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// waitLogCount waits until the running cdcd's log says msg at least n times.
func (h *myHarness) waitLogCount(msg string, n int, timeout time.Duration) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Count(h.proc.runLog(), msg) >= n {
			return
		}
		if done, code := h.proc.exited(0); done {
			h.t.Fatalf("cdcd exited with %d before its log said %s %d times", code, msg, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	h.t.Fatalf("cdcd's log did not say %s %d times within %v", msg, n, timeout)
}

// cdcd runs the cdcd binary against the harness's configuration, pointed at the running cdcd's
// metrics endpoint.
func (h *myHarness) cdcd(args ...string) (string, error) {
	h.t.Helper()
	m := regexp.MustCompile(`serving /metrics and /healthz" addr=(\S+)`).FindAllStringSubmatch(h.proc.runLog(), -1)
	if len(m) == 0 {
		h.t.Fatal("cdcd never said where it serves /metrics")
	}
	args = append(args, "-c", h.cfgPath, "--set", "metrics.listen="+m[len(m)-1][1])
	out, err := exec.Command(cdcdBin, args...).CombinedOutput()
	return string(out), err
}

// TestMariaDBChunkedSnapshots: with source.mysql.signal_table, the initial snapshot copies 5,000
// accounts and 3,000 ledger rows in chunks of 400 while a bank workload commits to the same rows;
// cdcd is killed with SIGKILL as it hands on the sixth chunk and resumes after the last durable
// one. Then `cdcd snapshot` copies the accounts again (cdcd killed as it hands on the third chunk of
// that copy, and resumed), and a row inserted into the signal table copies the ledger again, all
// under the workload. The tcc delivers every workload transaction
// exactly as MariaDB committed it (GTIDs and row changes, in order), every chunk of each copy once,
// numbered from 1 and the last complete, each row once per copy; and replaying everything leaves
// exactly the rows MariaDB holds.
func TestMariaDBChunkedSnapshots(t *testing.T) {
	h := newMyHarness(t, myBankDDL+`;
CREATE TABLE {t}signal (id VARCHAR(64) PRIMARY KEY, type VARCHAR(32) NOT NULL, data TEXT)`, "")
	const initial = 5000
	h.exec(h.sql(fmt.Sprintf("INSERT INTO {t}accounts SELECT seq, 1000.0000, 'opened' FROM seq_1_to_%d", initial)))
	h.exec(h.sql("INSERT INTO {t}ledger SELECT seq, 1 + seq % 100, seq / 100, '2026-01-01 00:00:00' FROM seq_1_to_3000"))
	bank := &myBank{h: h, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 5)), nextAcct: initial, nextLog: 3000}
	for id := 1; id <= initial; id++ {
		bank.accounts = append(bank.accounts, id)
	}
	signal := h.m.Database + "." + h.id + "_signal"
	settings := []string{"--set", "source.mysql.signal_table=" + signal, "--set", "source.mysql.snapshot_chunk_rows=400"}

	h.env = []string{"FAILPOINTS=mysql.snapshot-chunk-commit=kill@6;mysql.snapshot-row=sleep:200us"}
	h.start(settings...)
	if exited, _ := h.proc.exited(time.Minute); !exited || !strings.Contains(h.proc.log(), "failpoint mysql.snapshot-chunk-commit fired") {
		t.Fatalf("cdcd was not killed inside the snapshot:\n%s", h.proc.tail(20))
	}
	durable := 0
	for _, cr := range commitRecordsIn(t, h.brokers, h.id+".commits") {
		for _, tx := range cr.Txns {
			if tx.Copy != nil {
				durable++
			}
		}
	}
	if durable == 0 {
		t.Fatal("no chunk was durable before the kill: the test cannot show a resumed copy")
	}

	conn := h.connect()
	defer conn.Close()
	stopWorkload := bank.run(conn, 0)
	defer stopWorkload()                     // before conn closes, when the test ends early
	slow := "mysql.snapshot-row=sleep:200us" // a copy of a few seconds
	h.env = []string{"FAILPOINTS=" + slow}
	h.start(settings...)
	h.waitLogCount(`msg="snapshot resumed"`, 1, time.Minute)
	h.waitLogCount(`msg="snapshot complete"`, 1, 2*time.Minute)

	// A copy on demand, killed as it hands on its third chunk, resumed after the restart.
	h.proc.signal(syscall.SIGTERM)
	h.env = []string{"FAILPOINTS=mysql.snapshot-chunk-commit=kill@3;" + slow}
	h.start(settings...)
	h.waitLogCount("msg=streaming", 1, time.Minute)
	if out, err := h.cdcd("snapshot", h.m.Database+"."+h.id+"_accounts"); err != nil {
		t.Fatalf("cdcd snapshot: %v\n%s", err, out)
	}
	if exited, _ := h.proc.exited(time.Minute); !exited || !strings.Contains(h.proc.runLog(), "failpoint mysql.snapshot-chunk-commit fired") {
		t.Fatalf("cdcd was not killed inside the copy on demand:\n%s", h.proc.tail(20))
	}
	h.env = []string{"FAILPOINTS=" + slow}
	h.start(settings...)
	h.waitLogCount(`msg="snapshot resumed"`, 1, time.Minute)
	h.waitLogCount(`msg="snapshot complete"`, 1, 2*time.Minute)

	// A copy asked for by a row in the signal table. It ends at the last row the table held when it
	// began, although the workload keeps appending to the ledger.
	res, err := h.conn.Execute(h.sql("SELECT MAX(id) FROM {t}ledger"))
	if err != nil {
		t.Fatal(err)
	}
	ledgerMax, _ := res.GetInt(0, 0)
	h.exec(h.sql(fmt.Sprintf(`INSERT INTO {t}signal VALUES ('s1', 'execute-snapshot', '{"data-collections": ["%s.%s_ledger"]}')`, h.m.Database, h.id)))
	h.waitLogCount(`msg="snapshot complete"`, 2, 2*time.Minute)
	if err := stopWorkload(); err != nil {
		t.Fatal(err)
	}

	// Everything committed is read once the commit stream holds every workload transaction.
	count := func() (stream, snapshots int) {
		for _, cr := range commitRecordsIn(t, h.brokers, h.id+".commits") {
			for _, tx := range cr.Txns {
				if tx.Copy != nil {
					snapshots++
				} else {
					stream++
				}
			}
		}
		return stream, snapshots
	}
	deadline := time.Now().Add(time.Minute)
	for {
		if n, _ := count(); n >= len(h.history) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	stream, snapshots := count()
	t.Logf("%d workload transactions, %d in the commit stream; %d chunks (%d durable at the kill)", len(h.history), stream, snapshots, durable)
	txns, changes := h.delivered(stream+snapshots, 2*time.Minute)
	h.checkHistory(txns)

	state := map[string]map[string]string{"accounts": {}, "ledger": {}}
	copies := map[string]int{}             // table -> copies begun
	lastChunk := map[string]int64{}        // table -> the chunk of its last snapshot read
	copied := map[string]map[string]bool{} // table/copy -> keys read
	for _, c := range changes {
		row := c.after
		switch c.op {
		case "r":
			if c.chunk == 1 && lastChunk[c.table] != 1 {
				copies[c.table]++
			}
			lastChunk[c.table] = c.chunk
			copyKey := fmt.Sprintf("%s/%d", c.table, copies[c.table])
			if copied[copyKey] == nil {
				copied[copyKey] = map[string]bool{}
			}
			if copied[copyKey][c.key] {
				t.Errorf("%s: row %s copied twice in copy %d", c.table, c.key, copies[c.table])
			}
			copied[copyKey][c.key] = true
			fallthrough
		case "c", "u":
			state[c.table][c.key] = fmt.Sprintf("%s|%s|%s|%s", row["balance"], row["note"], row["acct"], row["amount"])
		case "d":
			delete(state[c.table], c.key)
		}
	}
	var lastLedgerCopy int64
	for k := range copied["ledger/2"] {
		lastLedgerCopy = max(lastLedgerCopy, mustInt(t, k))
	}
	// The bound is read a moment after the signal row commits: a few hundred rows of slack.
	if lastLedgerCopy > ledgerMax+1000 {
		t.Errorf("the ledger's second copy read up to id %d; the table's last id was %d when it was asked for: the copy chased the writers", lastLedgerCopy, ledgerMax)
	}
	if copies["accounts"] != 2 || copies["ledger"] != 2 {
		t.Errorf("copies delivered: %v; want 2 of accounts (initial, cdcd snapshot) and 2 of ledger (initial, signal)", copies)
	}
	// Chunk numbers, from the commit stream: each copy numbered from 1, ending with a complete one.
	complete := map[string]bool{}
	chunks := map[string][]int64{} // table -> chunk numbers in order, over all copies
	for _, cr := range commitRecordsIn(t, h.brokers, h.id+".commits") {
		for _, tx := range cr.Txns {
			if tx.Copy == nil {
				continue
			}
			table := strings.TrimPrefix(tx.Copy.Table, h.m.Database+"."+h.id+"_")
			if complete[table] || len(chunks[table]) == 0 {
				if tx.Copy.Chunk != 1 {
					t.Errorf("%s: a copy begins with chunk %d", table, tx.Copy.Chunk)
				}
				complete[table] = false
			} else if last := chunks[table][len(chunks[table])-1]; tx.Copy.Chunk != last+1 {
				t.Errorf("%s: chunk %d follows chunk %d", table, tx.Copy.Chunk, last)
			}
			chunks[table] = append(chunks[table], tx.Copy.Chunk)
			complete[table] = tx.Copy.Complete
		}
	}
	for _, table := range []string{"accounts", "ledger"} {
		if !complete[table] {
			t.Errorf("%s: the last copy never completed (chunks %v)", table, chunks[table])
		}
	}
	if n := len(chunks["accounts"]); n < 2*initial/400 {
		t.Errorf("accounts was copied in %d chunks over two copies; 5,000 rows in chunks of 400 make at least 13 each", n)
	}

	for table, q := range map[string]string{
		"accounts": "SELECT id, CONCAT('\"', CAST(balance AS CHAR), '\"|\"', note, '\"||') FROM {t}accounts",
		"ledger":   "SELECT id, CONCAT('||', acct, '|\"', CAST(amount AS CHAR), '\"') FROM {t}ledger",
	} {
		res, err := h.conn.Execute(h.sql(q))
		if err != nil {
			t.Fatal(err)
		}
		if res.RowNumber() != len(state[table]) {
			t.Errorf("%s: replaying the tcc leaves %d rows; MariaDB holds %d", table, len(state[table]), res.RowNumber())
		}
		bad := 0
		for i := range res.RowNumber() {
			id, _ := res.GetString(i, 0)
			want, _ := res.GetString(i, 1)
			if got := state[table][id]; got != want {
				if bad++; bad <= 5 {
					t.Errorf("%s %s: replaying the tcc gives %s; MariaDB has %s", table, id, got, want)
				}
			}
		}
	}
}

func mustInt(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("%q is not an integer: %v", s, err)
	}
	return n
}
