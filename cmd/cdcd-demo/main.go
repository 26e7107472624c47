// Command cdcd-demo is the part of `make demo` that proves cdcd's promise rather than its plumbing:
// it runs cdcd, commits a multi-table workload while killing cdcd with SIGKILL in the middle of it,
// restarts it, and then reads everything back through the tcc and compares it with what
// PostgreSQL says: the transactions it committed (their ids, from pg_current_xact_id(), in commit
// order) and the rows its tables hold at the end. It prints one verdict line, computed from that
// comparison, and exits 1 when it fails.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdcd-dev/cdcd/tcc"
)

func main() {
	cdcd := flag.String("cdcd", "bin/cdcd", "the cdcd binary")
	config := flag.String("config", "configs/postgres.yaml", "cdcd's configuration")
	dsn := flag.String("dsn", os.Getenv("CDCD_STACK_PG_DSN"), "the source database")
	brokers := flag.String("brokers", os.Getenv("CDCD_STACK_KAFKA_BROKERS"), "Kafka brokers")
	commitTopic := flag.String("commit-topic", "cdcd.demo.commits", "cdcd's kafka.commit_topic")
	logPath := flag.String("log", "cdcd.log", "where cdcd's log goes")
	duration := flag.Duration("duration", 12*time.Second, "how long the workload commits")
	kills := flag.Int("kills", 2, "how many times cdcd is killed with SIGKILL during the workload")
	flag.Parse()
	d := &demo{cdcd: *cdcd, config: *config, logPath: *logPath}
	if err := d.run(context.Background(), *dsn, strings.Split(*brokers, ","), *commitTopic, *duration, *kills); err != nil {
		fmt.Fprintln(os.Stderr, "cdcd-demo:", err)
		os.Exit(1)
	}
}

type demo struct {
	cdcd, config, logPath string
	proc                  *exec.Cmd
	exited                chan error
}

func say(format string, a ...any) { fmt.Printf("   "+format+"\n", a...) }

// start runs cdcd in the background, appending to its log.
func (d *demo) start() error {
	logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	d.proc = exec.Command(d.cdcd, "run", "-c", d.config)
	d.proc.Stdout, d.proc.Stderr = logf, logf
	if err := d.proc.Start(); err != nil {
		logf.Close()
		return err
	}
	d.exited = make(chan error, 1)
	go func(cmd *exec.Cmd) { d.exited <- cmd.Wait(); logf.Close() }(d.proc)
	return nil
}

func (d *demo) signal(sig syscall.Signal) error {
	_ = d.proc.Process.Signal(sig)
	select {
	case <-d.exited:
		return nil
	case <-time.After(time.Minute):
		_ = d.proc.Process.Kill()
		return fmt.Errorf("cdcd did not exit within a minute of %v", sig)
	}
}

// waitStreaming waits until cdcd holds its slot.
func waitStreaming(ctx context.Context, conn *pgx.Conn, exited <-chan error) error {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		var active bool
		if err := conn.QueryRow(ctx, "SELECT coalesce(bool_or(active), false) FROM pg_replication_slots WHERE slot_name = 'cdcd_demo'").Scan(&active); err != nil {
			return err
		}
		if active {
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("cdcd exited before streaming (%v); see its log", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	return errors.New("cdcd did not start streaming within a minute; see its log")
}

// waitDurable waits until the slot is confirmed past everything committed so far: cdcd made it all
// durable in Kafka.
func waitDurable(ctx context.Context, conn *pgx.Conn) error {
	var target string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&target); err != nil {
		return err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		var done bool
		if err := conn.QueryRow(ctx, "SELECT coalesce(bool_or(confirmed_flush_lsn >= $1::pg_lsn), false) FROM pg_replication_slots WHERE slot_name = 'cdcd_demo'", target).Scan(&done); err != nil {
			return err
		}
		if done {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("cdcd did not make everything up to %s durable within two minutes", target)
}

func (d *demo) run(ctx context.Context, dsn string, brokers []string, commitTopic string, duration time.Duration, kills int) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	work, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer work.Close(ctx)

	fmt.Println("== 1. cdcd starts: it copies the rows already there (the snapshot), then streams")
	if err := d.start(); err != nil {
		return err
	}
	if err := waitStreaming(ctx, conn, d.exited); err != nil {
		return err
	}
	say("cdcd (pid %d) streams; its log is %s", d.proc.Process.Pid, d.logPath)

	fmt.Printf("== 2. a shop commits transactions over two tables for %v; cdcd is killed with SIGKILL %d times meanwhile\n", duration, kills)
	say("notice: a kill lands while transactions are being written; nothing is lost or repeated because of it")
	w := &workload{conn: work, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))}
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- w.run(ctx, stop) }()
	for i := range kills {
		time.Sleep(duration / time.Duration(kills+1))
		pid := d.proc.Process.Pid
		if err := d.signal(syscall.SIGKILL); err != nil {
			return err
		}
		say("kill -9 of cdcd (pid %d) after %d committed transactions", pid, w.count())
		if err := d.start(); err != nil {
			return err
		}
		say("cdcd restarted (pid %d): it resumes right after the last commit stream record (kill %d of %d)", d.proc.Process.Pid, i+1, kills)
	}
	time.Sleep(duration / time.Duration(kills+1))
	close(stop)
	if err := <-done; err != nil {
		return err
	}
	say("the workload committed %d transactions (%d changes)", len(w.xids), w.changes)
	if err := waitDurable(ctx, conn); err != nil {
		return err
	}
	if err := d.signal(syscall.SIGTERM); err != nil {
		return err
	}
	say("everything is durable in Kafka; cdcd stopped with SIGTERM")

	fmt.Println("== 3. the verdict: the tcc's history against what PostgreSQL committed")
	return verdict(ctx, conn, brokers, commitTopic, w.xids, kills)
}

// workload commits transactions over customers and orders, and records each one's id as
// PostgreSQL gives it.
type workload struct {
	conn    *pgx.Conn
	rng     *rand.Rand
	xids    []string
	changes int
	nextID  int64
}

func (w *workload) count() int { return len(w.xids) }

func (w *workload) run(ctx context.Context, stop <-chan struct{}) error {
	w.nextID = 1
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		tx, err := w.conn.Begin(ctx)
		if err != nil {
			return err
		}
		id := w.nextID
		w.nextID++
		// A new customer and an order, an update of an older order, now and then a cancelled one.
		stmts := []string{
			fmt.Sprintf("INSERT INTO customers (id, name, email) VALUES (%d, 'customer %d', 'c%d@example.com')", id, id, id),
			fmt.Sprintf("INSERT INTO orders (id, customer_id, amount) VALUES (%d, %d, %d.%02d)", id, id, w.rng.IntN(500), w.rng.IntN(100)),
		}
		if id > 1 {
			old := 1 + w.rng.Int64N(id-1)
			stmts = append(stmts, fmt.Sprintf("UPDATE orders SET status = 'shipped', amount = amount + 1 WHERE id = %d", old))
			if w.rng.IntN(5) == 0 {
				stmts = append(stmts, fmt.Sprintf("DELETE FROM orders WHERE id = %d", old))
			}
		}
		for _, s := range stmts {
			tag, err := tx.Exec(ctx, s)
			if err != nil {
				_ = tx.Rollback(ctx)
				return err
			}
			w.changes += int(tag.RowsAffected())
		}
		var xid string
		if err := tx.QueryRow(ctx, "SELECT (pg_current_xact_id()::text::numeric % 4294967296)::text").Scan(&xid); err != nil {
			_ = tx.Rollback(ctx)
			return err
		}
		if err := tx.Commit(ctx); err != nil {
			return err
		}
		w.xids = append(w.xids, xid)
		time.Sleep(time.Duration(w.rng.IntN(15)) * time.Millisecond)
	}
}

// verdict reads the commit stream through the tcc and compares it with PostgreSQL: the same
// transactions in the same order, each whole and once, and the same final rows.
func verdict(ctx context.Context, conn *pgx.Conn, brokers []string, commitTopic string, xids []string, kills int) error {
	c, err := tcc.NewConsumer(ctx, tcc.Brokers(brokers...), tcc.CommitTopic(commitTopic))
	if err != nil {
		return err
	}
	defer c.Close()
	want := len(xids) + 1 // and the snapshot
	var got []string
	var problems []string
	state := map[string]map[string]json.RawMessage{} // topic/key -> after
	open, ops := "", int64(0)
	pctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for len(got) < want {
		f := c.Poll(pctx)
		for _, t := range f.Txns {
			if t.First {
				if open != "" {
					problems = append(problems, fmt.Sprintf("transaction %s began before %s ended", t.ID, open))
				}
				open, ops = t.ID, 0
			}
			ops += int64(len(t.Ops))
			for _, op := range t.Ops {
				if op.Value == nil {
					continue // a tombstone
				}
				var env struct {
					After map[string]json.RawMessage `json:"after"`
					Op    string                     `json:"op"`
				}
				if err := json.Unmarshal(op.Value, &env); err != nil {
					return err
				}
				k := op.Topic + "/" + string(op.Key)
				if env.Op == "d" {
					delete(state, k)
				} else {
					state[k] = env.After
				}
			}
			if t.Last {
				if ops != t.Records {
					problems = append(problems, fmt.Sprintf("transaction %s arrived with %d of its %d records", t.ID, ops, t.Records))
				}
				open = ""
				got = append(got, t.ID)
			}
		}
		if f.Err != nil {
			return fmt.Errorf("reading through the tcc after %d transactions: %w", len(got), f.Err)
		}
	}
	if len(got) == 0 || got[0] != "snapshot" {
		problems = append(problems, "the snapshot is not the first transaction")
	} else {
		got = got[1:]
	}
	if strings.Join(got, ",") != strings.Join(xids, ",") {
		n := 0
		for n < min(len(got), len(xids)) && got[n] == xids[n] {
			n++
		}
		problems = append(problems, fmt.Sprintf("the tcc delivered %d transactions, PostgreSQL committed %d; they part at #%d", len(got), len(xids), n))
	}
	rows, err := compareTables(ctx, conn, state)
	if err != nil {
		return err
	}
	if rows != "" {
		problems = append(problems, rows)
	}
	say("PostgreSQL committed %d transactions; the tcc delivered %d after the snapshot", len(xids), len(got))
	if len(problems) > 0 {
		for _, p := range problems {
			say("MISMATCH: %s", p)
		}
		fmt.Printf("VERDICT: FAIL (%d mismatches)\n", len(problems))
		return errors.New("the history through the tcc differs from the source")
	}
	fmt.Printf("VERDICT: PASS: %d transactions committed by PostgreSQL arrived through the tcc whole, once each, in commit order, across %d kill -9s of cdcd; replaying them gives exactly the rows both tables hold now\n", len(xids), kills)
	return nil
}

// compareTables replays the tcc's changes against the tables' rows now, column by column as
// PostgreSQL renders them in text (timestamps as instants); it returns what differs, or "".
func compareTables(ctx context.Context, conn *pgx.Conn, state map[string]map[string]json.RawMessage) (string, error) {
	var diffs []string
	total := 0
	for _, table := range []string{"customers", "orders"} {
		rows, err := conn.Query(ctx, "SELECT id::text, to_jsonb(t.*)::text FROM public."+table+" t")
		if err != nil {
			return "", err
		}
		source := map[string]map[string]any{}
		for rows.Next() {
			var id, row string
			if err := rows.Scan(&id, &row); err != nil {
				rows.Close()
				return "", err
			}
			var m map[string]any
			d := json.NewDecoder(strings.NewReader(row))
			d.UseNumber()
			if err := d.Decode(&m); err != nil {
				rows.Close()
				return "", err
			}
			source[id] = m
		}
		if err := rows.Err(); err != nil {
			return "", err
		}
		total += len(source)
		replayed := 0
		for k, after := range state {
			topic, key, _ := strings.Cut(k, "/")
			if topic != "cdcd.public."+table {
				continue
			}
			replayed++
			var kv map[string]json.Number
			if err := json.Unmarshal([]byte(key), &kv); err != nil {
				return "", err
			}
			id := kv["id"].String()
			src, ok := source[id]
			if !ok {
				diffs = append(diffs, fmt.Sprintf("%s %s is in the replayed history, not in the table", table, id))
				continue
			}
			for col, want := range src {
				if !sameValue(want, after[col]) {
					diffs = append(diffs, fmt.Sprintf("%s %s column %s: %s in the history, %v in the table", table, id, col, after[col], want))
				}
			}
		}
		if replayed != len(source) {
			diffs = append(diffs, fmt.Sprintf("%s: the replayed history has %d rows, the table %d", table, replayed, len(source)))
		}
	}
	sort.Strings(diffs)
	say("replaying the tcc's changes gives %d rows; the tables hold %d", len(state), total)
	if len(diffs) > 0 {
		return strings.Join(diffs[:min(len(diffs), 5)], "; "), nil
	}
	return "", nil
}

// sameValue compares PostgreSQL's rendering of a value (to_jsonb) with the JSON KCOP's: numbers
// and text exactly, numeric as its exact text, timestamps as instants.
func sameValue(want any, got json.RawMessage) bool {
	var g any
	d := json.NewDecoder(strings.NewReader(string(got)))
	d.UseNumber()
	if err := d.Decode(&g); err != nil {
		return false
	}
	switch w := want.(type) {
	case nil:
		return g == nil
	case json.Number:
		switch gv := g.(type) {
		case json.Number:
			return gv == w
		case string: // numeric travels as its exact text
			return gv == w.String()
		}
		return false
	case string:
		gs, ok := g.(string)
		if !ok {
			return false
		}
		if gs == w {
			return true
		}
		wt, err1 := time.Parse(time.RFC3339Nano, w)
		gt, err2 := time.Parse(time.RFC3339Nano, gs)
		return err1 == nil && err2 == nil && wt.Equal(gt)
	}
	return fmt.Sprint(want) == fmt.Sprint(g)
}
