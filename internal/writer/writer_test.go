package writer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cdcd-dev/cdcd/bookmark"
	"github.com/cdcd-dev/cdcd/change"
	"github.com/cdcd-dev/cdcd/internal/fault"
	"github.com/cdcd-dev/cdcd/kcop"
)

// twoRecords is a KCOP that writes each change twice, to two topics, so the tests see multi-record
// changes and several partitions.
type twoRecords struct{}

func (twoRecords) Process(_ context.Context, c *change.Change, dst []kcop.Record) ([]kcop.Record, error) {
	v := []byte(fmt.Sprintf("%s/%d", c.Txn.ID, c.Index))
	return append(dst, kcop.Record{Topic: "a", Partition: 0, Key: v, Value: v}, kcop.Record{Topic: "b", Partition: kcop.PartitionByKey, Key: v, Value: v}), nil
}

func newFake(t *testing.T) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "a", "b"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

func open(t *testing.T, brokers []string, source string, cfg func(*Config)) *Writer {
	t.Helper()
	c := Config{Brokers: brokers, ClientID: "t", TransactionalID: "tx-" + source, CommitTopic: "commits", Source: source,
		MaxGroupRecords: 10, MaxGroupDelay: time.Hour, Timeout: 10 * time.Second, ReplicationFactor: 1}
	if cfg != nil {
		cfg(&c)
	}
	w, err := Open(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func writeTxns(t *testing.T, w *Writer, from, n, changes int) {
	t.Helper()
	ctx := context.Background()
	tbl := &change.Table{Schema: "s", Name: "t"}
	for i := from; i < from+n; i++ {
		txn := &change.Txn{ID: strconv.Itoa(i), Position: fmt.Sprintf("0/%X", 16*i)}
		if err := w.Begin(ctx, txn); err != nil {
			t.Fatal(err)
		}
		for j := range changes {
			if err := kcop.NewStage(twoRecords{}, w, nil).Change(ctx, &change.Change{Op: change.Insert, Table: tbl, Txn: txn, Index: int64(j)}); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Commit(ctx, &change.Commit{Txn: txn, End: fmt.Sprintf("0/%X", 16*i+8), Changes: int64(changes)}, nil); err != nil {
			t.Fatal(err)
		}
	}
}

func readCommits(t *testing.T, brokers []string) []*bookmark.CommitRecord {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("commits"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []*bookmark.CommitRecord
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return out
		}
		fs.EachRecord(func(r *kgo.Record) {
			c, err := bookmark.ParseCommitRecord(r.Value)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, c)
		})
	}
}

func TestWriterGroupsAndResumes(t *testing.T) {
	brokers := newFake(t)
	w := open(t, brokers, "src", nil)
	var durable []string
	w.OnDurable = func(r string) { durable = append(durable, r) }
	writeTxns(t, w, 1, 7, 2) // 4 records each: a group closes once it holds 10 or more
	if err := w.Close(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	commits := readCommits(t, brokers)
	if len(commits) != 3 {
		t.Fatalf("%d commit records, want 3 (3+3+1 transactions)", len(commits))
	}
	for i, c := range commits {
		if c.Group != uint64(i+1) || c.Source != "src" {
			t.Errorf("commit %d: group %d source %q", i, c.Group, c.Source)
		}
		var records int64
		for _, tx := range c.Txns {
			records += tx.Records
			if tx.Records != 4 || tx.Changes != 2 {
				t.Errorf("group %d txn %s: %d changes, %d records", c.Group, tx.ID, tx.Changes, tx.Records)
			}
		}
		var ranged int64
		for _, r := range c.Ranges {
			ranged += r.Count
		}
		if ranged != records {
			t.Errorf("group %d: ranges count %d records, transactions %d", c.Group, ranged, records)
		}
	}
	if fmt.Sprint(durable) != fmt.Sprint([]string{commits[0].Resume, commits[1].Resume, commits[2].Resume}) || commits[2].Resume != "0/78" {
		t.Errorf("durable positions %v; commit records resume at %s, %s, %s", durable, commits[0].Resume, commits[1].Resume, commits[2].Resume)
	}

	// A new writer resumes after the last commit record and numbers groups on.
	w2 := open(t, brokers, "src", nil)
	if w2.Resume() != "0/78" || w2.Last().Group != 3 {
		t.Fatalf("resume %q group %d", w2.Resume(), w2.Last().Group)
	}
	writeTxns(t, w2, 8, 1, 1)
	if err := w2.Close(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	if c := readCommits(t, brokers); len(c) != 4 || c[3].Group != 4 {
		t.Fatalf("after the restart: %d commit records", len(c))
	}

	// The commit stream belongs to one source.
	c := Config{Brokers: brokers, ClientID: "t", TransactionalID: "other", CommitTopic: "commits", Source: "elsewhere", Timeout: 5 * time.Second}
	if _, err := Open(context.Background(), c); err == nil {
		t.Error("a writer for another source opened the commit stream")
	}
}

func TestWriterAbortsAHalfWrittenTransaction(t *testing.T) {
	brokers := newFake(t)
	w := open(t, brokers, "src", nil)
	writeTxns(t, w, 1, 1, 1)
	ctx := context.Background()
	txn := &change.Txn{ID: "2", Position: "0/20"}
	if err := w.Begin(ctx, txn); err != nil {
		t.Fatal(err)
	}
	if err := kcop.NewStage(twoRecords{}, w, nil).Change(ctx, &change.Change{Op: change.Insert, Table: &change.Table{Schema: "s", Name: "t"}, Txn: txn}); err != nil {
		t.Fatal(err)
	}
	// Closing mid-transaction aborts the whole group, the complete transaction 1 included: it will
	// be read again after Resume.
	if err := w.Close(ctx, true); err != nil {
		t.Fatal(err)
	}
	if c := readCommits(t, brokers); len(c) != 0 {
		t.Fatalf("%d commit records after an aborted group", len(c))
	}
	if w2 := open(t, brokers, "src", nil); w2.Resume() != "" {
		t.Errorf("resume %q, want the beginning", w2.Resume())
	}
}

func TestWriterRejectsOversizeRecords(t *testing.T) {
	brokers := newFake(t)
	w := open(t, brokers, "src", func(c *Config) { c.MaxMessageBytes = 64 })
	ctx := context.Background()
	txn := &change.Txn{ID: "1", Position: "0/10"}
	_ = w.Begin(ctx, txn)
	err := kcop.NewStage(twoRecords{}, w, nil).Change(ctx, &change.Change{Op: change.Insert, Table: &change.Table{Schema: "s", Name: "t"}, Txn: txn})
	if err == nil {
		t.Fatal("an oversize record was accepted")
	}
	t.Log(err)
	_ = w.Close(ctx, false)
}

// TestCommitRecordStaysUnderTheSizeLimit: many one-change transactions in one group would make a
// commit record over the record size limit; groups close for the commit record's size too, and every
// transaction is vouched for once.
func TestCommitRecordStaysUnderTheSizeLimit(t *testing.T) {
	brokers := newFake(t)
	const limit = 32 << 10
	w := open(t, brokers, "src", func(c *Config) { c.MaxGroupRecords = 1_000_000; c.MaxMessageBytes = limit })
	writeTxns(t, w, 1, 1500, 1)
	if err := w.Close(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	commits := readCommits(t, brokers)
	if len(commits) < 2 {
		t.Fatalf("%d commit records for 1500 transactions under a %d-byte limit", len(commits), limit)
	}
	n := 0
	for i, c := range commits {
		b, _ := c.Marshal()
		if len(b) > limit {
			t.Errorf("commit record %d is %d bytes, over %d", i, len(b), limit)
		}
		for _, e := range c.Txns {
			n++
			if e.ID != strconv.Itoa(n) {
				t.Fatalf("transaction %s where %d was due", e.ID, n)
			}
		}
	}
	if n != 1500 {
		t.Errorf("%d transactions vouched for, want 1500", n)
	}
}

// TestProgressRecords: a position the source passed with nothing to write becomes durable through a
// commit record without transactions, in the next group or on its own, and only then is acknowledged.
func TestProgressRecords(t *testing.T) {
	brokers := newFake(t)
	w := open(t, brokers, "src", func(c *Config) { c.MaxGroupDelay = 10 * time.Millisecond })
	durable := make(chan string, 16)
	w.OnDurable = func(r string) { durable <- r }
	ctx := context.Background()
	writeTxns(t, w, 1, 1, 1) // ends at 0/18
	if got := <-durable; got != "0/18" {
		t.Fatalf("durable %s, want 0/18", got)
	}
	if err := w.Progress(ctx, "0/40", ""); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-durable:
		if got != "0/40" {
			t.Fatalf("durable %s, want 0/40", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the progress position never became durable")
	}
	// Progress followed by a transaction: the transaction's end is the group's resume position.
	if err := w.Progress(ctx, "0/48", ""); err != nil {
		t.Fatal(err)
	}
	writeTxns(t, w, 5, 1, 1) // ends at 0/58
	if got := <-durable; got != "0/58" {
		t.Fatalf("durable %s, want 0/58", got)
	}
	if err := w.Close(ctx, true); err != nil {
		t.Fatal(err)
	}
	commits := readCommits(t, brokers)
	var resumes []string
	for i, c := range commits {
		if c.Group != uint64(i+1) {
			t.Errorf("commit record %d is group %d", i, c.Group)
		}
		resumes = append(resumes, fmt.Sprintf("%s/%d", c.Resume, len(c.Txns)))
	}
	if fmt.Sprint(resumes) != "[0/18/1 0/40/0 0/58/1]" {
		t.Errorf("commit records (resume/transactions) %v", resumes)
	}
}

// TestSourceState: the source's state goes into every commit record after it arrives, with a
// Commit or a Progress, until it changes; a writer opened on the commit stream carries the last
// record's state on; and a snapshot chunk's table, number and completeness are in its entry.
func TestSourceState(t *testing.T) {
	brokers := newFake(t)
	ctx := context.Background()
	w := open(t, brokers, "src", func(c *Config) { c.MaxGroupRecords = 1 })
	tbl := &change.Table{Schema: "s", Name: "t"}
	chunk := &change.Txn{ID: "snapshot", Position: "0/10", Snapshot: true, Copy: &change.Copy{Table: "s.t", Chunk: 3, Rows: 30, Complete: true}}
	if err := w.Begin(ctx, chunk); err != nil {
		t.Fatal(err)
	}
	if err := kcop.NewStage(twoRecords{}, w, nil).Change(ctx, &change.Change{Op: change.Read, Table: tbl, Txn: chunk}); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx, &change.Commit{Txn: chunk, End: "0/18", Changes: 1, State: `{"a":1}`}, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Progress(ctx, "0/20", `{"a":2}`); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(ctx, true); err != nil {
		t.Fatal(err)
	}
	w = open(t, brokers, "src", nil)
	if w.Last().State != `{"a":2}` {
		t.Fatalf("the last record's state is %q", w.Last().State)
	}
	if err := w.Progress(ctx, "0/28", `{"a":2}`); err != nil {
		t.Fatal(err)
	}
	writeTxns(t, w, 3, 1, 1) // a Commit without state: the source has none any more
	if err := w.Close(ctx, true); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range readCommits(t, brokers) {
		got = append(got, c.Resume+" "+c.State)
		for _, e := range c.Txns {
			if e.ID == "snapshot" && (e.Copy == nil || *e.Copy != (bookmark.Copy{Table: "s.t", Chunk: 3, Rows: 30, Complete: true}) || !e.Snapshot) {
				t.Errorf("the chunk's entry: %+v copy %+v", e, e.Copy)
			}
		}
	}
	if want := []string{`0/18 {"a":1}`, `0/20 {"a":2}`, "0/38 "}; !slices.Equal(got, want) {
		t.Errorf("commit records (resume state) %q, want %q", got, want)
	}
}

// TestKafkaErrorClassification: what a restart cannot cure is terminal and names the setting; a
// transaction the coordinator aborted for its age is told apart from a fenced producer.
func TestKafkaErrorClassification(t *testing.T) {
	w := &Writer{cfg: Config{TransactionalID: "tx", TransactionTimeout: time.Minute}}
	tests := []struct {
		name     string
		err      error
		openFor  time.Duration // 0: no transaction open
		terminal bool
		timedOut bool
		mentions string
	}{
		{"a record over the producer's limit", sarama.ConfigurationError("Attempt to produce message larger than configured Producer.MaxMessageBytes"), 0, true, false, "kafka.max_message_bytes"},
		{"the broker refuses the size", sarama.ErrMessageSizeTooLarge, 0, true, false, "max.message.bytes"},
		{"not authorised", sarama.ErrTopicAuthorizationFailed, 0, true, false, "WRITE"},
		{"a leader moved", sarama.ErrNotLeaderForPartition, 0, false, false, ""},
		{"fenced by a second process", sarama.ErrProducerFenced, time.Second, true, false, "another process"},
		{"aborted for its age", sarama.ErrInvalidProducerEpoch, 2 * time.Minute, false, true, "kafka.transaction_timeout"},
		{"aborted for its age, as fenced", sarama.ErrProducerFenced, 2 * time.Minute, false, true, "kafka.transaction_timeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w.txnStarted.Store(0)
			if tc.openFor > 0 {
				w.txnStarted.Store(time.Now().Add(-tc.openFor).UnixNano())
			}
			err := w.kafkaError("writing", tc.err)
			if fault.IsTerminal(err) != tc.terminal || errors.Is(err, ErrTransactionTimedOut) != tc.timedOut {
				t.Errorf("%v: terminal %v, timed out %v", err, fault.IsTerminal(err), errors.Is(err, ErrTransactionTimedOut))
			}
			if !strings.Contains(err.Error(), tc.mentions) {
				t.Errorf("%v does not mention %q", err, tc.mentions)
			}
		})
	}
}

// TestIdleClosesTheGroup: a group that would wait an hour for company is committed as soon as the
// source says it has nothing more queued, and only between transactions.
func TestIdleClosesTheGroup(t *testing.T) {
	brokers := newFake(t)
	w := open(t, brokers, "idle", nil)
	defer w.Close(context.Background(), false)
	var durable []string
	w.OnDurable = func(r string) { durable = append(durable, r) }
	ctx := context.Background()
	writeTxns(t, w, 1, 1, 1)
	txn := &change.Txn{ID: "2", Position: "0/20"}
	if err := w.Begin(ctx, txn); err != nil {
		t.Fatal(err)
	}
	if err := w.Idle(ctx); err != nil {
		t.Fatal(err)
	}
	if len(durable) != 0 {
		t.Fatalf("a group was committed inside transaction 2: %v", durable)
	}
	if err := w.Commit(ctx, &change.Commit{Txn: txn, End: "0/28"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Idle(ctx); err != nil {
		t.Fatal(err)
	}
	if len(durable) != 1 || durable[0] != "0/28" {
		t.Fatalf("after Idle, durable up to %v; want 0/28", durable)
	}
	commits := readCommits(t, brokers)
	if len(commits) != 1 || len(commits[0].Txns) != 2 {
		t.Errorf("commit records %+v; want one holding both transactions", commits)
	}
}

// headered is a KCOP that gives each change a record with as many headers of its own as the change's
// index, no key for index 0 and no value (a tombstone) for index 1.
type headered struct{}

func (headered) Process(_ context.Context, c *change.Change, dst []kcop.Record) ([]kcop.Record, error) {
	r := kcop.Record{Topic: "a", Partition: 0, Key: []byte(fmt.Sprint("k", c.Index)), Value: []byte(fmt.Sprint("v", c.Index))}
	for i := range c.Index {
		r.Headers = append(r.Headers, kcop.Header{Key: fmt.Sprint("h", i), Value: []byte(fmt.Sprint(c.Index, "/", i))})
	}
	switch c.Index {
	case 0:
		r.Key = nil
	case 1:
		r.Value = nil
	}
	return append(dst, r), nil
}

// TestRecordsKeepKeysValuesAndHeaders: what reaches Kafka is each record's key, value (nil for a
// tombstone) and own headers, in order, followed by cdcd's ordering headers, whether the headers fit
// the writer's inline slots (up to one of the KCOP's) or not.
func TestRecordsKeepKeysValuesAndHeaders(t *testing.T) {
	brokers := newFake(t)
	w := open(t, brokers, "src", nil)
	ctx := context.Background()
	tbl := &change.Table{Schema: "s", Name: "t"}
	txn := &change.Txn{ID: "77", Position: "0/A0"}
	if err := w.Begin(ctx, txn); err != nil {
		t.Fatal(err)
	}
	const changes = 5
	stage := kcop.NewStage(headered{}, w, nil)
	for i := range changes {
		if err := stage.Change(ctx, &change.Change{Op: change.Insert, Table: tbl, Txn: txn, Index: int64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(ctx, &change.Commit{Txn: txn, End: "0/B0", Changes: changes}, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(ctx, true); err != nil {
		t.Fatal(err)
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"a": {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var got []*kgo.Record
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for len(got) < changes && fctx.Err() == nil {
		fs := cl.PollFetches(fctx)
		fs.EachRecord(func(r *kgo.Record) { got = append(got, r) })
	}
	if len(got) != changes {
		t.Fatalf("read %d records, want %d", len(got), changes)
	}
	for i, r := range got {
		wantKey, wantValue := []byte(fmt.Sprint("k", i)), []byte(fmt.Sprint("v", i))
		switch i {
		case 0:
			wantKey = nil
		case 1:
			wantValue = nil
		}
		if !slices.Equal(r.Key, wantKey) || (r.Key == nil) != (wantKey == nil) || !slices.Equal(r.Value, wantValue) || (r.Value == nil) != (wantValue == nil) {
			t.Errorf("record %d: key %q value %q, want %q %q", i, r.Key, r.Value, wantKey, wantValue)
		}
		var want []string
		for j := range i {
			want = append(want, fmt.Sprintf("h%d=%d/%d", j, i, j))
		}
		want = append(want, bookmark.HeaderTxn+"=77", bookmark.HeaderPos+"=0/A0", fmt.Sprintf("%s=%d", bookmark.HeaderOp, i), bookmark.HeaderGroup+"=1")
		if i == changes-1 {
			want = append(want, fmt.Sprintf("%s=%d", bookmark.HeaderCount, changes))
		}
		var have []string
		for _, h := range r.Headers {
			have = append(have, h.Key+"="+string(h.Value))
		}
		if !slices.Equal(have, want) {
			t.Errorf("record %d headers %q, want %q", i, have, want)
		}
	}
}
