package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"

	"github.com/cdcd-dev/cdcd/internal/testenv"
	"github.com/cdcd-dev/cdcd/tcc"
)

// myHarness is one isolated replication from the stack's MariaDB: its own tables (named with its id
// as a prefix), commit topic and data topics.
type myHarness struct {
	t       *testing.T
	id      string
	m       testenv.MySQL
	conn    *client.Conn
	brokers []string
	cfgPath string
	tables  []string // database-qualified
	proc    process
	env     []string
	streams int
	// history is every committed transaction of the workload, in commit order.
	history []myTxn
}

// myTxn is a transaction as MariaDB committed it: its GTID (@@last_gtid) and its row changes, each
// "table:op:id".
type myTxn struct {
	gtid string
	ops  []string
	pos  string // the commit stream's position of a delivered transaction
}

// newMyHarness creates the tables of ddl (statements separated by ";", "{t}" standing for the
// harness's table prefix) and writes cdcd's configuration for them.
func newMyHarness(t *testing.T, ddl string, extraConfig string) *myHarness {
	t.Helper()
	h := &myHarness{t: t, m: testenv.MariaDB(t), brokers: testenv.KafkaBrokers(t)}
	h.id = fmt.Sprintf("e2e_my_%06d", rand.IntN(1_000_000))
	h.conn = h.connect()
	for _, stmt := range strings.Split(ddl, ";") {
		if strings.TrimSpace(stmt) != "" {
			h.exec(h.sql(stmt))
		}
	}
	res, err := h.conn.Execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME LIKE ? ORDER BY 1", h.m.Database, h.id+"\\_%")
	if err != nil {
		t.Fatal(err)
	}
	for i := range res.RowNumber() {
		name, _ := res.GetString(i, 0)
		h.tables = append(h.tables, h.m.Database+"."+name)
	}
	dir := t.TempDir()
	h.cfgPath = filepath.Join(dir, "cdcd.yaml")
	h.proc = process{t: t, logPath: filepath.Join(logDir(t), "cdcd.log")}
	cfg := fmt.Sprintf(`source:
  kind: mariadb
  mysql:
    addr: %s
    user: %s
    password: %s
    server_id: %d
    tables: [%s]
    heartbeat: 1s
kafka:
  brokers: [%s]
  transactional_id: %s
  commit_topic: %s.commits
  timeout: 10s
  group_max_delay: 50ms
kcops:
  - type: json
    topic: "%s.{table}"
metrics:
  listen: 127.0.0.1:0
log:
  level: debug
%s`, h.m.Addr, h.m.User, h.m.Password, 10_000+rand.IntN(50_000), strings.Join(h.tables, ", "),
		strings.Join(h.brokers, ","), h.id, h.id, h.id, extraConfig)
	if err := os.WriteFile(h.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.cleanup)
	return h
}

func (h *myHarness) connect() *client.Conn {
	h.t.Helper()
	conn, err := client.Connect(h.m.Addr, h.m.User, h.m.Password, h.m.Database)
	if err != nil {
		h.t.Fatal(err)
	}
	for _, q := range []string{"SET time_zone = '+00:00'", "SET NAMES utf8mb4"} {
		if _, err := conn.Execute(q); err != nil {
			h.t.Fatal(err)
		}
	}
	return conn
}

// sql replaces {t} with the table prefix.
func (h *myHarness) sql(s string) string { return strings.ReplaceAll(s, "{t}", h.id+"_") }

func (h *myHarness) exec(q string, args ...any) {
	h.t.Helper()
	if _, err := h.conn.Execute(q, args...); err != nil {
		h.t.Fatalf("%s: %v", q, err)
	}
}

func (h *myHarness) cleanup() {
	h.proc.signal(9)
	if h.t.Failed() {
		h.t.Logf("last lines of the cdcd log:\n%s", h.proc.tail(60))
	}
	for _, tb := range h.tables {
		_, _ = h.conn.Execute("DROP TABLE IF EXISTS " + tb)
	}
	h.conn.Close()
	deleteTopics(h.brokers, h.id+".")
}

func (h *myHarness) start(extraArgs ...string) {
	h.t.Helper()
	h.proc.env = h.env
	h.proc.start(cdcdBin, append([]string{"run", "-c", h.cfgPath}, extraArgs...)...)
}

func (h *myHarness) waitStreaming(timeout time.Duration) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if n := strings.Count(h.proc.log(), "msg=streaming"); n > h.streams {
			h.streams = n
			return
		}
		if done, code := h.proc.exited(0); done {
			h.t.Fatalf("cdcd exited with %d before streaming", code)
		}
		time.Sleep(100 * time.Millisecond)
	}
	h.t.Fatalf("cdcd did not start streaming within %v", timeout)
}

// stmt is one statement of a workload transaction and the row change it makes ("table:op:id").
type stmt struct {
	sql string
	op  string
}

// txn commits stmts as one transaction on conn and records it with MariaDB's GTID for it.
func (h *myHarness) txn(conn *client.Conn, stmts ...stmt) error {
	if _, err := conn.Execute("BEGIN"); err != nil {
		return err
	}
	var ops []string
	for _, s := range stmts {
		res, err := conn.Execute(h.sql(s.sql))
		if err != nil {
			_, _ = conn.Execute("ROLLBACK")
			return fmt.Errorf("%s: %w", s.sql, err)
		}
		if res.AffectedRows != 1 {
			_, _ = conn.Execute("ROLLBACK")
			return fmt.Errorf("%s changed %d rows, want 1", s.sql, res.AffectedRows)
		}
		ops = append(ops, s.op)
	}
	if _, err := conn.Execute("COMMIT"); err != nil {
		return err
	}
	res, err := conn.Execute("SELECT @@last_gtid")
	if err != nil {
		return err
	}
	gtid, _ := res.GetString(0, 0)
	h.history = append(h.history, myTxn{gtid: gtid, ops: ops})
	return nil
}

// myChange is one change as the tcc delivered it.
type myChange struct {
	txn    string
	index  int64
	recKey string // the Kafka record's key
	table  string
	op     string
	key    string
	before map[string]json.RawMessage
	after  map[string]json.RawMessage
	chunk  int64 // a snapshot read's chunk number
}

// delivered reads the commit stream through the tcc until it has delivered want whole transactions
// (snapshots included), and returns them with their changes in order.
func (h *myHarness) delivered(want int, within time.Duration) ([]myTxn, []myChange) {
	h.t.Helper()
	c, err := tcc.NewConsumer(context.Background(), tcc.Brokers(h.brokers...), tcc.CommitTopic(h.id+".commits"))
	if err != nil {
		h.t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var txns []myTxn
	var changes []myChange
	var cur *myTxn
	for len(txns) < want {
		f := c.Poll(ctx)
		if f.Err != nil {
			h.t.Fatalf("the tcc after %d of %d transactions: %v", len(txns), want, f.Err)
		}
		for _, tx := range f.Txns {
			if tx.First {
				id := tx.ID
				if tx.Snapshot {
					id = "snapshot"
				}
				cur = &myTxn{gtid: id, pos: tx.Position}
			}
			var chunk int64
			if tx.Copy != nil {
				chunk = tx.Copy.Chunk
			}
			for _, op := range tx.Ops {
				var env struct {
					Before map[string]json.RawMessage `json:"before"`
					After  map[string]json.RawMessage `json:"after"`
					Op     string                     `json:"op"`
					Source struct {
						Table   string `json:"table"`
						OpIndex int64  `json:"op_index"`
					} `json:"source"`
				}
				if op.Value == nil {
					continue // a tombstone
				}
				if err := json.Unmarshal(op.Value, &env); err != nil {
					h.t.Fatalf("%s/%d@%d: %v", op.Topic, op.Partition, op.Offset, err)
				}
				row := env.After
				if row == nil {
					row = env.Before
				}
				table := strings.TrimPrefix(env.Source.Table, h.id+"_")
				ch := myChange{txn: cur.gtid, index: env.Source.OpIndex, recKey: string(op.Key), table: table, op: env.Op, key: string(row["id"]), before: env.Before, after: env.After, chunk: chunk}
				if n := len(changes); n > 0 && len(cur.ops) > 0 && changes[n-1].txn == ch.txn && changes[n-1].index == ch.index {
					// A key-changing update is a delete of the old key, then the update: one change.
					changes, cur.ops = changes[:n-1], cur.ops[:len(cur.ops)-1]
				}
				changes = append(changes, ch)
				cur.ops = append(cur.ops, table+":"+env.Op+":"+ch.key)
			}
			if tx.Last {
				txns = append(txns, *cur)
			}
		}
	}
	return txns, changes
}

// checkHistory compares what the tcc delivered, transaction by transaction and change by change,
// with what MariaDB committed (its GTIDs in commit order); snapshots are left out.
func (h *myHarness) checkHistory(got []myTxn) {
	h.t.Helper()
	h.checkHistoryOf(got, h.history)
}

// checkHistoryOf is checkHistory against the committed transactions history.
func (h *myHarness) checkHistoryOf(got, history []myTxn) {
	h.t.Helper()
	got = slices.DeleteFunc(slices.Clone(got), func(x myTxn) bool { return x.gtid == "snapshot" })
	n := max(len(got), len(h.history))
	bad := 0
	for i := range n {
		var g, w myTxn
		if i < len(got) {
			g = got[i]
		}
		if i < len(history) {
			w = history[i]
		}
		if g.gtid != w.gtid || !slices.Equal(g.ops, w.ops) {
			if bad++; bad <= 5 {
				h.t.Errorf("transaction %d: the tcc delivered %s %v; MariaDB committed %s %v", i, g.gtid, g.ops, w.gtid, w.ops)
			}
		}
	}
	if bad > 0 {
		h.t.Errorf("%d of %d transactions differ (delivered %d, committed %d)", bad, n, len(got), len(history))
	}
}
