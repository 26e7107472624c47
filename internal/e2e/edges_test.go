package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cdcd-dev/cdcd/bookmark"
	"github.com/cdcd-dev/cdcd/internal/testenv"
	"github.com/cdcd-dev/cdcd/tcc"
)

// snapshotTxns counts the snapshot transactions (chunks) the commit stream holds.
func (h *harness) snapshotTxns() int {
	h.t.Helper()
	n := 0
	for _, rec := range h.commitRecords() {
		for _, tx := range rec.Txns {
			if tx.Snapshot {
				n++
			}
		}
	}
	return n
}

// commitRecords reads the harness's whole commit stream with a read_committed franz-go consumer.
func (h *harness) commitRecords() []*bookmark.CommitRecord {
	h.t.Helper()
	return commitRecordsIn(h.t, h.brokers, h.id+".commits")
}

// commitRecordsIn reads every committed record of a commit topic.
func commitRecordsIn(t *testing.T, brokers []string, topic string) []*bookmark.CommitRecord {
	t.Helper()
	client, err := sarama.NewClient(brokers, sarama.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	end, err := client.GetOffset(topic, 0, sarama.OffsetNewest)
	client.Close()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out []*bookmark.CommitRecord
	for next := int64(0); next < end; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s: %v", topic, ctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) {
			next = r.Offset + 1
			if r.Attrs.IsControl() {
				return
			}
			c, err := bookmark.ParseCommitRecord(r.Value)
			if err != nil {
				t.Fatalf("%s@%d: %v", topic, r.Offset, err)
			}
			out = append(out, c)
		})
	}
	return out
}

// walLSN is where the database's write-ahead log ends now.
func (h *harness) walLSN() bookmark.LSN {
	h.t.Helper()
	var s string
	if err := h.conn.QueryRow(context.Background(), "SELECT pg_current_wal_lsn()::text").Scan(&s); err != nil {
		h.t.Fatal(err)
	}
	lsn, err := bookmark.ParseLSN(s)
	if err != nil {
		h.t.Fatal(err)
	}
	return lsn
}

// slotConfirmed is the slot's confirmed_flush_lsn.
func (h *harness) slotConfirmed() bookmark.LSN {
	h.t.Helper()
	var s string
	if err := h.conn.QueryRow(context.Background(), "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", h.id).Scan(&s); err != nil {
		h.t.Fatal(err)
	}
	lsn, err := bookmark.ParseLSN(s)
	if err != nil {
		h.t.Fatal(err)
	}
	return lsn
}

// keysOf lists "op key" of a table's records as a read_committed consumer reads them ("tomb key" for
// tombstones).
func keysOf(recs []consumed) []string {
	var out []string
	for _, c := range recs {
		if c.env == nil {
			out = append(out, "tomb "+c.key)
			continue
		}
		out = append(out, c.env.Op+" "+c.key)
	}
	return out
}

// TestResumeRefusedWhenSlotRecreated: the slot is dropped and re-created while cdcd is down, so the
// transactions between are gone from the server. cdcd must refuse to start (naming the gap and the
// fix) instead of skipping them; with the gap accepted explicitly it continues after it. The commit
// stream names the server by its system identifier.
func TestResumeRefusedWhenSlotRecreated(t *testing.T) {
	h := newHarness(t, "CREATE TABLE t (id int PRIMARY KEY, v text)")
	h.start()
	h.waitStreaming(time.Minute)
	h.exec("INSERT INTO t VALUES (1, 'before')")
	h.waitDurable(time.Minute)
	h.stop()

	h.exec("SELECT pg_drop_replication_slot($1)", h.id)
	h.exec("INSERT INTO t VALUES (2, 'lost with the slot')")
	h.exec("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", h.id)
	h.exec("INSERT INTO t VALUES (3, 'after')")
	confirmed := h.slotConfirmed()

	h.start()
	expectExit(t, h, 90*time.Second, 1, "cannot prove", "source.postgres.accept_gap_to="+confirmed.String())
	if h.slotConfirmed() != confirmed {
		t.Errorf("the refused start moved the slot from %s to %s", confirmed, h.slotConfirmed())
	}

	h.start("--set", "source.postgres.accept_gap_to="+confirmed.String())
	h.waitStreaming(time.Minute)
	h.waitDurable(time.Minute)
	h.stop()
	if got := fmt.Sprint(keysOf(h.readAll()["t"])); got != `[c {"id":1} c {"id":3}]` {
		t.Errorf("records %s, want the row before the gap and the one after it", got)
	}

	var sysid string
	if err := h.conn.QueryRow(context.Background(), "SELECT system_identifier::text FROM pg_control_system()").Scan(&sysid); err != nil {
		t.Fatal(err)
	}
	for _, c := range h.commitRecords() {
		if want := fmt.Sprintf("postgres/%s/cdcd/%s", sysid, h.id); c.Source != want {
			t.Fatalf("commit record source %q, want %q", c.Source, want)
		}
	}
}

// TestKeysComeFromTheStream: keys and key changes follow the replica identity as the stream had it
// at each change: an identity index that is not the primary key, a primary key changed and a table
// dropped while cdcd was down. And a jsonb document null is told apart from SQL NULL.
func TestKeysComeFromTheStream(t *testing.T) {
	h := newHarness(t, `
CREATE TABLE byindex (id int PRIMARY KEY, code text NOT NULL, v text, doc jsonb, CONSTRAINT byindex_code UNIQUE (code));
ALTER TABLE byindex REPLICA IDENTITY USING INDEX byindex_code;
CREATE TABLE rekeyed (id int PRIMARY KEY, alt int NOT NULL UNIQUE, v text);
CREATE TABLE dropped (id int PRIMARY KEY, v text);`)
	h.start()
	h.waitStreaming(time.Minute)
	h.stop() // what follows is a backlog, read after the catalog changed

	h.exec("INSERT INTO byindex VALUES (1, 'a', 'x', 'null'::jsonb), (2, 'b', 'y', NULL)")
	h.exec("UPDATE byindex SET v = 'z' WHERE id = 1")
	h.exec("UPDATE byindex SET code = 'c' WHERE id = 1")
	h.exec("DELETE FROM byindex WHERE id = 1")
	h.exec("INSERT INTO rekeyed VALUES (1, 10), (2, 20)")
	h.exec("ALTER TABLE rekeyed DROP CONSTRAINT rekeyed_pkey, ADD PRIMARY KEY (alt)")
	h.exec("INSERT INTO rekeyed VALUES (3, 30)")
	h.exec("DELETE FROM rekeyed WHERE id = 2")
	h.exec("INSERT INTO dropped VALUES (1, 'x')")
	h.exec("DELETE FROM dropped WHERE id = 1")
	h.exec("DROP TABLE dropped")

	// The dropped table leaves the configuration; its backlog is still in the publication's stream.
	h.start("--set", "source.postgres.tables="+h.schema+".byindex,"+h.schema+".rekeyed")
	h.waitStreaming(time.Minute)
	h.waitDurable(time.Minute)
	h.stop()
	got := h.readAll()
	want := map[string]string{
		"byindex": `[c {"code":"a"} c {"code":"b"} u {"code":"a"} d {"code":"a"} tomb {"code":"a"} u {"code":"c"} d {"code":"c"} tomb {"code":"c"}]`,
		"rekeyed": `[c {"id":1} c {"id":2} c {"alt":30} d {"alt":20} tomb {"alt":20}]`,
		"dropped": `[c {"id":1} d {"id":1} tomb {"id":1}]`,
	}
	for table, w := range want {
		if g := fmt.Sprint(keysOf(got[table])); g != w {
			t.Errorf("%s: %s\n  want %s", table, g, w)
		}
	}
	recs := got["byindex"]
	if len(recs) == 8 {
		if d := recs[6].env.Before; string(d["code"]) != `"c"` {
			t.Errorf("the delete's before image %v lacks the identity column", d)
		}
		var doc1, doc2 json.RawMessage = recs[0].env.After["doc"], recs[1].env.After["doc"]
		// PostgreSQL's own words for the two values.
		var isNull1, isNull2 bool
		var text1 string
		if err := h.conn.QueryRow(context.Background(), "SELECT 'null'::jsonb IS NULL, NULL::jsonb IS NULL, 'null'::jsonb::text").Scan(&isNull1, &isNull2, &text1); err != nil {
			t.Fatal(err)
		}
		wantDoc1, _ := json.Marshal(text1)
		if isNull1 || !isNull2 || string(doc1) != string(wantDoc1) || string(doc2) != "null" {
			t.Errorf("jsonb document null arrived as %s, SQL NULL as %s; want %s and null", doc1, doc2, wantDoc1)
		}
	}
}

// TestSigtermConfirmsWhileACatalogQueryRuns: SIGTERM arrives while the reader's catalog connection
// is in the middle of a query (which the shutdown interrupts, closing that connection); cdcd must
// still confirm everything durable to the slot before it exits.
func TestSigtermConfirmsWhileACatalogQueryRuns(t *testing.T) {
	h := newHarness(t, "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY)", "--set", "source.postgres.snapshot=never")
	// The first Relation message (a) is described normally, the second (b) stalls in a query.
	h.env = []string{"FAILPOINTS=postgres.slow-catalog-query=on@2"}
	h.start()
	h.waitStreaming(time.Minute)
	h.exec("INSERT INTO a VALUES (1)")
	h.exec("INSERT INTO b VALUES (1)")
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(h.log(), "failpoint postgres.slow-catalog-query fired") || len(h.commitRecords()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("transaction a never became durable while b's relation was being described")
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	h.stop()
	if done, code := h.exited(0); !done || code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}
	recs := h.commitRecords()
	durable, _ := bookmark.ParseLSN(recs[len(recs)-1].Resume)
	if got := h.slotConfirmed(); got < durable {
		t.Errorf("after SIGTERM the slot is confirmed to %s, but the commit stream holds everything up to %s", got, durable)
	}
}

// TestCompactedCommitTopicRefused: a commit topic that would lose records (compaction, retention)
// stops cdcd run and fails cdcd validate, each naming the setting and the fix.
func TestCompactedCommitTopicRefused(t *testing.T) {
	h := newHarness(t, "CREATE TABLE t (id int PRIMARY KEY)")
	admin, err := sarama.NewClusterAdmin(h.brokers, sarama.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if err := admin.CreateTopic(h.id+".commits", &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1,
		ConfigEntries: map[string]*string{"cleanup.policy": ptr("compact"), "retention.ms": ptr("86400000")}}, false); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(cdcdBin, "validate", "-c", h.cfgPath).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "cleanup.policy is compact") || !strings.Contains(string(out), "retention.ms is 86400000") {
		t.Errorf("validate: %v\n%s", err, out)
	}
	h.start()
	expectExit(t, h, time.Minute, 1, "would lose commit records", "cleanup.policy=delete,retention.ms=-1")
}

// TestTCCCommitStreamGapsAndRetention: a commit stream whose first records were deleted is reported
// (ErrDataGone), never started in the middle; a caught-up consumer restarts from its bookmark after
// retention removed the data records it had delivered.
func TestTCCCommitStreamGapsAndRetention(t *testing.T) {
	h := newHarness(t, "CREATE TABLE t (id int PRIMARY KEY)")
	h.start()
	h.waitStreaming(time.Minute)
	for i := range 4 {
		h.exec(fmt.Sprintf("INSERT INTO t VALUES (%d)", i))
		time.Sleep(200 * time.Millisecond) // separate commit groups
	}
	h.waitDurable(time.Minute)
	c := newTCC(t, h)
	txns := drain(t, c, 5) // the snapshot and four inserts
	last := txns[len(txns)-1].Bookmark
	c.Close()

	admin, err := sarama.NewClusterAdmin(h.brokers, sarama.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	// Retention removes every data record delivered so far.
	client, err := sarama.NewClient(h.brokers, sarama.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	end, err := client.GetOffset(h.id+".t", 0, sarama.OffsetNewest)
	client.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.DeleteRecords(h.id+".t", map[int32]int64{0: end}); err != nil {
		t.Fatal(err)
	}
	h.exec("INSERT INTO t VALUES (100)")
	h.waitDurable(time.Minute)
	resumed := drain(t, newTCC(t, h, tcc.FromBookmark(last)), 1)
	if len(resumed) != 1 || len(resumed[0].Ops) != 1 || string(resumed[0].Ops[0].Key) != `{"id":100}` {
		t.Errorf("resumed after retention: %+v", resumed)
	}

	// The commit stream's first two records go: reading it from the beginning is refused.
	if err := admin.DeleteRecords(h.id+".commits", map[int32]int64{0: 2}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f := newTCC(t, h).Poll(ctx)
	if !errors.Is(f.Err, tcc.ErrDataGone) || len(f.Txns) != 0 {
		t.Fatalf("from the beginning of a commit stream missing its head: %d txns, err %v; want ErrDataGone", len(f.Txns), f.Err)
	}
	t.Logf("reported: %v", f.Err)
	h.stop()
}

// TestTimelineChanges: the server is replaced by a copy of itself that is promoted (a restore, a
// failover): a new timeline. When it branched off after everything cdcd wrote, cdcd continues; when
// it branched off before (Kafka holds transactions the server no longer has), cdcd refuses, even
// though the new timeline has the same number as the one it wrote on.
func TestTimelineChanges(t *testing.T) {
	const name = "timeline"
	dsn := testenv.ScratchPostgres(t, name, 15496, "wal_level=logical")
	h := newHarnessOn(t, dsn, "CREATE TABLE t (id int PRIMARY KEY)")
	save := func(copy string) {
		h.conn.Close(context.Background())
		testenv.Stack(t, "scratch-postgres", "save", name, copy)
		h.reconnect()
	}
	restore := func(copy string) {
		h.conn.Close(context.Background())
		testenv.Stack(t, "scratch-postgres", "restore", name, copy)
		h.reconnect()
	}
	h.start()
	h.waitStreaming(time.Minute)
	h.exec("INSERT INTO t VALUES (1)")
	h.waitDurable(time.Minute)
	h.stop()
	save("before2")
	h.exec("INSERT INTO t VALUES (2)")
	h.start()
	h.waitStreaming(time.Minute)
	h.waitDurable(time.Minute)
	h.stop()
	save("after2")

	// A copy with everything cdcd wrote, promoted: it continues.
	restore("after2")
	h.start()
	h.waitStreaming(time.Minute)
	h.exec("INSERT INTO t VALUES (3)")
	h.waitDurable(time.Minute)
	h.stop()
	if !strings.Contains(h.log(), "branched off after it, so nothing is lost") {
		t.Errorf("cdcd did not notice the new timeline:\n%s", h.proc.tail(10))
	}
	if got := fmt.Sprint(keysOf(h.readAll()["t"])); got != `[c {"id":1} c {"id":2} c {"id":3}]` {
		t.Errorf("records %s", got)
	}
	recs := h.commitRecords()
	if l := recs[len(recs)-1].Lineage; !strings.HasPrefix(l, "2@") {
		t.Errorf("the last commit record's lineage is %q, want timeline 2", l)
	}

	// A copy from before row 2, promoted to another timeline 2: refused.
	restore("before2")
	h.start()
	expectExit(t, h, 90*time.Second, 1, "is not in the history of this server's timeline 2", "cannot prove")
}
