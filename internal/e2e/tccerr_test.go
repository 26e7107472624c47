package e2e

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/cdcd-dev/cdcd/bookmark"
	"github.com/cdcd-dev/cdcd/tcc"
)

func newTCC(t *testing.T, h *harness, opts ...tcc.Opt) *tcc.Consumer {
	t.Helper()
	c, err := tcc.NewConsumer(context.Background(), append([]tcc.Opt{tcc.Brokers(h.brokers...), tcc.CommitTopic(h.id + ".commits")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// drain polls until n transactions completed, or fails.
func drain(t *testing.T, c *tcc.Consumer, n int) []*tcc.Txn {
	t.Helper()
	var out []*tcc.Txn
	done := 0
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for done < n {
		f := c.Poll(ctx)
		out = append(out, f.Txns...)
		for _, tx := range f.Txns {
			if tx.Last {
				done++
			}
		}
		if f.Err != nil {
			t.Fatalf("after %d transactions: %v", done, f.Err)
		}
	}
	return out
}

// TestTCCLargeTransactionInChunks: a 100,000-row transaction reaches the tcc in chunks of at most
// MaxChunkOps records, First on the first, Last on the last, every record once and in order.
func TestTCCLargeTransactionInChunks(t *testing.T) {
	h := newHarness(t, "CREATE TABLE big (id int PRIMARY KEY, v text)", "--set", "kafka.topic_partitions=4")
	h.start()
	h.waitStreaming(time.Minute)
	h.exec("INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 100000) g")
	h.waitDurable(3 * time.Minute)
	h.stop()

	// Small bounds make partitions pause and resume over and over: with a client for each
	// partition, and with one client for all four.
	for _, clients := range []int{4, 1} {
		c := newTCC(t, h, tcc.MaxChunkOps(7000), tcc.MaxBufferedRecords(500), tcc.FetchClients(clients))
		chunks := drain(t, c, 2) // the (empty) snapshot and the large transaction
		var ops int64
		var prev int64 = -1
		for i, ch := range chunks[1:] {
			if len(ch.Ops) > 7000 {
				t.Fatalf("%d clients: chunk %d holds %d records", clients, i, len(ch.Ops))
			}
			if ch.First != (i == 0) || ch.Last != (i == len(chunks)-2) {
				t.Errorf("%d clients: chunk %d: First=%v Last=%v", clients, i, ch.First, ch.Last)
			}
			for _, op := range ch.Ops {
				if op.Index != prev+1 {
					t.Fatalf("%d clients: operation %d follows %d", clients, op.Index, prev)
				}
				prev = op.Index
				ops++
			}
		}
		if ops != 100000 || chunks[len(chunks)-1].Records != 100000 {
			t.Errorf("%d clients: %d records delivered in %d chunks; the transaction has %d", clients, ops, len(chunks)-1, chunks[len(chunks)-1].Records)
		}
	}
}

// TestTCCBookmarks: resuming from any delivered bookmark continues with the next record; bookmarks
// of another commit stream or garbled ones are refused with a clear error.
func TestTCCBookmarks(t *testing.T) {
	h := newHarness(t, "CREATE TABLE t (id int PRIMARY KEY)", "--set", "kafka.topic_partitions=2")
	h.start()
	h.waitStreaming(time.Minute)
	for i := range 30 {
		h.exec(fmt.Sprintf("INSERT INTO t SELECT g FROM generate_series(%d, %d) g", i*10+1, i*10+10))
	}
	h.waitDurable(time.Minute)
	h.stop()

	all := drain(t, newTCC(t, h), 31)
	var ids []string
	var marks []bookmark.Consumer
	for _, tx := range all {
		for _, op := range tx.Ops {
			ids = append(ids, op.ID())
			marks = append(marks, op.Bookmark())
		}
	}
	for _, i := range []int{0, 7, 150, len(ids) - 2} {
		c := newTCC(t, h, tcc.FromBookmark(marks[i]))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		f := c.Poll(ctx)
		cancel()
		if f.Err != nil || len(f.Txns) == 0 || len(f.Txns[0].Ops) == 0 {
			t.Fatalf("from bookmark %d (%s): %+v", i, marks[i], f)
		}
		if got := f.Txns[0].Ops[0].ID(); got != ids[i+1] {
			t.Errorf("from the bookmark of %s the next operation is %s, want %s", ids[i], got, ids[i+1])
		}
	}

	foreign := marks[3]
	foreign.Source = "postgres/elsewhere/slot"
	garbled := marks[3]
	garbled.CommitOffset++ // a transaction marker, or another group's record
	beyond := marks[3]
	beyond.CommitOffset = 1 << 40 // past the end of the commit stream
	for name, b := range map[string]bookmark.Consumer{"foreign": foreign, "garbled": garbled, "beyond the end": beyond} {
		c, err := tcc.NewConsumer(context.Background(), tcc.Brokers(h.brokers...), tcc.CommitTopic(h.id+".commits"), tcc.FromBookmark(b))
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err = c.Poll(ctx).Err
			cancel()
			c.Close()
		}
		if !errors.Is(err, tcc.ErrForeignBookmark) {
			t.Errorf("%s bookmark %s: %v, want ErrForeignBookmark", name, b, err)
		}
	}
}

// TestTCCReportsDeletedRecords: when records the commit stream vouches for are gone (retention,
// DeleteRecords), the tcc says so instead of skipping them.
func TestTCCReportsDeletedRecords(t *testing.T) {
	h := newHarness(t, "CREATE TABLE t (id int PRIMARY KEY)")
	h.start()
	h.waitStreaming(time.Minute)
	for i := range 5 {
		h.exec(fmt.Sprintf("INSERT INTO t VALUES (%d)", i))
	}
	h.waitDurable(time.Minute)
	h.stop()
	admin, err := sarama.NewClusterAdmin(h.brokers, sarama.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if err := admin.DeleteRecords(h.id+".t", map[int32]int64{0: 3}); err != nil {
		t.Fatal(err)
	}
	c := newTCC(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err2 error
	for err2 == nil && ctx.Err() == nil {
		err2 = c.Poll(ctx).Err
	}
	if !errors.Is(err2, tcc.ErrDataGone) {
		t.Fatalf("err = %v, want ErrDataGone", err2)
	}
	t.Logf("reported: %v", err2)
}

// TestTCCFromEnd: a consumer started from the end receives only transactions committed after it.
func TestTCCFromEnd(t *testing.T) {
	h := newHarness(t, "CREATE TABLE t (id int PRIMARY KEY)")
	h.start()
	h.waitStreaming(time.Minute)
	for i := range 3 {
		h.exec(fmt.Sprintf("INSERT INTO t VALUES (%d)", i))
	}
	h.waitDurable(time.Minute)
	c := newTCC(t, h, tcc.FromEnd())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	f := c.Poll(ctx) // positions the consumer at the end; nothing new yet
	cancel()
	if len(f.Txns) != 0 {
		t.Fatalf("a consumer from the end got %d old transactions", len(f.Txns))
	}
	h.exec("INSERT INTO t VALUES (100)")
	h.exec("INSERT INTO t VALUES (101)")
	got := drain(t, c, 2)
	var keys []string
	for _, tx := range got {
		for _, op := range tx.Ops {
			keys = append(keys, string(op.Key))
		}
	}
	if fmt.Sprint(keys) != `[{"id":100} {"id":101}]` {
		t.Errorf("from the end: %v", keys)
	}
	h.stop()
}
