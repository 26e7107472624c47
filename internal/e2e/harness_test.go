// Package e2e runs the cdcd binary against the real PostgreSQL and Kafka of scripts/stack.sh and
// checks what read_committed consumers see against what the source committed.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cdcd-dev/cdcd/bookmark"
	"github.com/cdcd-dev/cdcd/internal/testenv"
)

var cdcdBin, pgapplyBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cdcd-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	cdcdBin = filepath.Join(dir, "cdcd")
	pgapplyBin = filepath.Join(dir, "pgapply")
	// Failpoints are compiled in, so that tests can crash cdcd at the dangerous instants.
	for bin, pkg := range map[string]string{cdcdBin: "../../cmd/cdcd", pgapplyBin: "../../examples/pgapply"} {
		build := exec.Command("go", "build", "-race", "-tags", "failpoints", "-o", bin, pkg)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building", pkg+":", err)
			os.Exit(2)
		}
	}
	// CDCD_TEST_CDCD_BIN runs the tests against another cdcd binary (e.g. an older build, to see a test
	// fail on the code it was written against).
	if other := os.Getenv("CDCD_TEST_CDCD_BIN"); other != "" {
		cdcdBin = other
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// harness is one isolated replication: its own schema, slot, publication, commit topic and topics.
type harness struct {
	t       *testing.T
	id      string
	schema  string
	dsn     string
	brokers []string
	conn    *pgx.Conn
	cfgPath string
	extra   []string
	env     []string      // added to cdcd's environment, e.g. FAILPOINTS=...
	oracle  bool          // watchCommits made a test_decoding slot
	streams int           // "streaming" lines seen in the log so far
	codecs  map[uint8]int // data records readAll read, by the compression codec of their batch
	proc    process
}

// logDir is where t's processes write their logs: a directory of its own under $CDCD_TEST_LOG_DIR
// when that is set, kept after the run (scripts/test.sh searches the cluster tests' logs for the
// Kafka password), else a temporary one.
func logDir(t *testing.T) string {
	t.Helper()
	root := os.Getenv("CDCD_TEST_LOG_DIR")
	if root == "" {
		return t.TempDir()
	}
	dir, err := os.MkdirTemp(root, strings.NewReplacer("/", "_").Replace(t.Name())+"-")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// process runs a binary in the background, appending its output to a log file.
type process struct {
	t       *testing.T
	logPath string
	env     []string
	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	mark    int // where the log of the process started last begins
}

func (p *process) start(bin string, args ...string) {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		p.t.Fatalf("%s is already running", bin)
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	if fi, err := logf.Stat(); err == nil {
		p.mark = int(fi.Size())
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if len(p.env) > 0 {
		cmd.Env = append(os.Environ(), p.env...)
	}
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	p.cmd, p.done = cmd, done
}

// signal sends sig and waits for the process to go, killing it after a minute.
func (p *process) signal(sig syscall.Signal) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		p.t.Errorf("%s did not exit within 60s of %v", cmd.Path, sig)
	}
}

// send sends sig without waiting for the process to go.
func (p *process) send(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		_ = p.cmd.Process.Signal(sig)
	}
}

// exited reports whether the process has exited by itself within the given time, and its exit code.
func (p *process) exited(within time.Duration) (bool, int) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return true, 0
	}
	select {
	case <-done:
		p.mu.Lock()
		p.cmd = nil
		p.mu.Unlock()
		return true, cmd.ProcessState.ExitCode()
	case <-time.After(within):
		return false, 0
	}
}

func (p *process) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// runLog is what the process started last logged.
func (p *process) runLog() string {
	p.mu.Lock()
	mark := p.mark
	p.mu.Unlock()
	return p.log()[mark:]
}

// tail is the end of the process's log, for failure messages.
func (p *process) tail(n int) string {
	lines := strings.Split(p.log(), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func newHarness(t *testing.T, ddl string, extraConfig ...string) *harness {
	t.Helper()
	return newHarnessOn(t, testenv.PostgresDSN(t), ddl, extraConfig...)
}

// newHarnessOn is newHarness on another PostgreSQL (e.g. a scratch server).
func newHarnessOn(t *testing.T, dsn, ddl string, extraConfig ...string) *harness {
	t.Helper()
	h := &harness{t: t, dsn: dsn, brokers: testenv.KafkaBrokers(t), extra: extraConfig}
	h.id = fmt.Sprintf("e2e_%s_%06d", strings.ToLower(strings.NewReplacer("/", "_", "-", "_", ".", "_").Replace(t.Name())), rand.IntN(1_000_000))
	if len(h.id) > 60 {
		h.id = h.id[len(h.id)-60:]
	}
	h.schema = h.id
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, h.dsn)
	if err != nil {
		t.Fatal(err)
	}
	h.conn = conn
	h.exec("SET TimeZone = 'UTC'")
	h.exec("SET IntervalStyle = 'iso_8601'")
	h.exec("CREATE SCHEMA " + h.schema)
	h.exec("SET search_path = " + h.schema)
	h.exec(ddl)
	rows, err := conn.Query(ctx, "SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY 1", h.schema)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	qualified := make([]string, len(tables))
	for i, tb := range tables {
		qualified[i] = h.schema + "." + tb
	}
	dir := t.TempDir()
	h.cfgPath = filepath.Join(dir, "cdcd.yaml")
	h.proc = process{t: t, logPath: filepath.Join(logDir(t), "cdcd.log")}
	cfg := fmt.Sprintf(`source:
  kind: postgres
  postgres:
    dsn: %s
    slot: %s
    publication: %s
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
`, h.dsn, h.id, h.id, strings.Join(qualified, ", "), strings.Join(h.brokers, ","), h.id, h.id, h.id)
	if err := os.WriteFile(h.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.cleanup)
	return h
}

func (h *harness) exec(sql string, args ...any) {
	h.t.Helper()
	if _, err := h.conn.Exec(context.Background(), sql, args...); err != nil {
		h.t.Fatalf("%s: %v", sql, err)
	}
}

func (h *harness) cleanup() {
	h.kill()
	ctx := context.Background()
	if h.t.Failed() {
		h.t.Logf("last lines of the cdcd log:\n%s", h.proc.tail(60))
	}
	_, _ = h.conn.Exec(ctx, "SELECT pg_drop_replication_slot($1) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active", h.id)
	_, _ = h.conn.Exec(ctx, "DROP PUBLICATION IF EXISTS "+h.id)
	_, _ = h.conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+h.schema+" CASCADE")
	h.conn.Close(ctx)
	deleteTopics(h.brokers, h.id+".")
}

// deleteTopics deletes the topics whose names start with prefix, as far as the broker lets it.
func deleteTopics(brokers []string, prefix string) {
	admin, err := sarama.NewClusterAdmin(brokers, sarama.NewConfig())
	if err != nil {
		return
	}
	defer admin.Close()
	topics, err := admin.ListTopics()
	if err != nil {
		return
	}
	for name := range topics {
		if strings.HasPrefix(name, prefix) {
			_ = admin.DeleteTopic(name)
		}
	}
}

// start runs `cdcd run` in the background, appending to the harness's log.
func (h *harness) start(extraArgs ...string) {
	h.t.Helper()
	args := append(append([]string{"run", "-c", h.cfgPath}, h.extra...), extraArgs...)
	h.proc.env = h.env
	h.proc.start(cdcdBin, args...)
}

// waitStreaming waits until cdcd streams and has copied the tables of a snapshot it started or
// resumed in its latest run.
func (h *harness) waitStreaming(timeout time.Duration) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var active bool
		err := h.conn.QueryRow(context.Background(), "SELECT active FROM pg_replication_slots WHERE slot_name = $1", h.id).Scan(&active)
		log := h.log()
		latest := log[max(0, strings.LastIndex(log, "serving /metrics")):]
		copying := (strings.Contains(latest, `msg="snapshot started"`) || strings.Contains(latest, `msg="snapshot resumed"`)) &&
			!strings.Contains(latest, `msg="snapshot complete"`)
		if err == nil && active && strings.Count(log, "msg=streaming") > h.streams && !copying {
			h.streams = strings.Count(log, "msg=streaming")
			return
		}
		if done, code := h.exited(0); done {
			h.t.Fatalf("cdcd exited with %d before streaming", code)
		}
		time.Sleep(100 * time.Millisecond)
	}
	h.t.Fatalf("cdcd did not start streaming within %v", timeout)
}

// kill sends SIGKILL and waits for the process to go.
func (h *harness) kill() { h.proc.signal(syscall.SIGKILL) }

// stop sends SIGTERM and waits for a clean exit.
func (h *harness) stop() { h.proc.signal(syscall.SIGTERM) }

// exited reports whether cdcd has exited by itself, and its exit code.
func (h *harness) exited(within time.Duration) (bool, int) { return h.proc.exited(within) }

func (h *harness) log() string { return h.proc.log() }

// waitDurable waits until the commit stream vouches for everything the source committed so far.
func (h *harness) waitDurable(timeout time.Duration) {
	h.t.Helper()
	want := h.walLSN()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var confirmed *string
		err := h.conn.QueryRow(context.Background(), "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", h.id).Scan(&confirmed)
		if err == nil && confirmed != nil {
			if got, _ := bookmark.ParseLSN(*confirmed); got >= want {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	h.t.Fatalf("the slot did not reach %s within %v", want, timeout)
}

// consumed is one data record as a read_committed consumer sees it.
type consumed struct {
	topic     string
	partition int32
	offset    int64
	key       string
	value     []byte
	headers   map[string]string
	env       *envelope
}

type envelope struct {
	Before    map[string]json.RawMessage `json:"before"`
	After     map[string]json.RawMessage `json:"after"`
	Op        string                     `json:"op"`
	Unchanged []string                   `json:"unchanged"`
	Source    struct {
		Schema   string `json:"schema"`
		Table    string `json:"table"`
		TxID     string `json:"txId"`
		Pos      string `json:"pos"`
		OpIndex  int64  `json:"op_index"`
		Snapshot bool   `json:"snapshot"`
	} `json:"source"`
}

// readAll reads every committed record of the harness's data topics with a read_committed consumer
// (franz-go, not cdcd's own code), in offset order per partition.
func (h *harness) readAll() map[string][]consumed {
	h.t.Helper()
	client, err := sarama.NewClient(h.brokers, sarama.NewConfig())
	if err != nil {
		h.t.Fatal(err)
	}
	defer client.Close()
	if err := client.RefreshMetadata(); err != nil {
		h.t.Fatal(err)
	}
	topics, err := client.Topics()
	if err != nil {
		h.t.Fatal(err)
	}
	ends := map[string]map[int32]int64{}
	offsets := map[string]map[int32]kgo.Offset{}
	for _, tp := range topics {
		if !strings.HasPrefix(tp, h.id+".") || strings.HasSuffix(tp, ".commits") {
			continue
		}
		parts, err := client.Partitions(tp)
		if err != nil {
			h.t.Fatal(err)
		}
		ends[tp], offsets[tp] = map[int32]int64{}, map[int32]kgo.Offset{}
		for _, p := range parts {
			end, err := client.GetOffset(tp, p, sarama.OffsetNewest)
			if err != nil {
				h.t.Fatal(err)
			}
			ends[tp][p] = end
			offsets[tp][p] = kgo.NewOffset().AtStart()
		}
	}
	out := map[string][]consumed{}
	if len(offsets) == 0 {
		return out
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(h.brokers...), kgo.ConsumePartitions(offsets),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	if err != nil {
		h.t.Fatal(err)
	}
	defer cl.Close()
	next := map[string]map[int32]int64{}
	for tp := range ends {
		next[tp] = map[int32]int64{}
	}
	remaining := func() bool {
		for tp, ps := range ends {
			for p, end := range ps {
				if next[tp][p] < end {
					return true
				}
			}
		}
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for remaining() {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			h.t.Fatalf("reading the data topics: %v (progress %v of %v)", ctx.Err(), next, ends)
		}
		fs.EachError(func(tp string, p int32, err error) { h.t.Fatalf("fetching %s/%d: %v", tp, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			next[r.Topic][r.Partition] = r.Offset + 1
			if r.Attrs.IsControl() {
				return
			}
			if h.codecs == nil {
				h.codecs = map[uint8]int{}
			}
			h.codecs[r.Attrs.CompressionType()]++
			headers := map[string]string{}
			for _, hd := range r.Headers {
				headers[hd.Key] = string(hd.Value)
			}
			h.collect(out, r.Topic, r.Partition, r.Offset, r.Key, r.Value, headers)
		})
	}
	return out
}

// collect adds a data record to out under its table, its envelope decoded.
func (h *harness) collect(out map[string][]consumed, topic string, partition int32, offset int64, key, value []byte, headers map[string]string) {
	h.t.Helper()
	c := consumed{topic: topic, partition: partition, offset: offset, key: string(key), value: value, headers: headers}
	if value != nil {
		c.env = &envelope{}
		if err := json.Unmarshal(value, c.env); err != nil {
			h.t.Fatalf("%s/%d@%d: not an envelope: %v: %s", topic, partition, offset, err, value)
		}
	}
	table := strings.TrimPrefix(topic, h.id+".")
	out[table] = append(out[table], c)
}
