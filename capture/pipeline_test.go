package capture

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cdcd-dev/cdcd/change"
)

type recorder struct {
	events []string
	failAt int
}

func (r *recorder) note(s string) error {
	r.events = append(r.events, s)
	if r.failAt > 0 && len(r.events) == r.failAt {
		return errors.New("boom")
	}
	return nil
}
func (r *recorder) Begin(_ context.Context, t *change.Txn) error { return r.note("B" + t.ID) }
func (r *recorder) Change(_ context.Context, c *change.Change) error {
	return r.note(fmt.Sprint("C", c.Index))
}
func (r *recorder) Commit(_ context.Context, c *change.Commit) error { return r.note("E" + c.End) }

func feed(p Handler, txns int) error {
	ctx := context.Background()
	for i := range txns {
		t := &change.Txn{ID: fmt.Sprint(i)}
		if err := p.Begin(ctx, t); err != nil {
			return err
		}
		for j := range 3 {
			if err := p.Change(ctx, &change.Change{Txn: t, Index: int64(j)}); err != nil {
				return err
			}
		}
		if err := p.Commit(ctx, &change.Commit{Txn: t, End: fmt.Sprint(i)}); err != nil {
			return err
		}
	}
	return nil
}

func TestPipelineKeepsOrder(t *testing.T) {
	var direct, piped recorder
	if err := feed(&direct, 500); err != nil {
		t.Fatal(err)
	}
	p := NewPipeline(context.Background(), &piped, 7)
	if err := feed(p, 500); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(direct.events) != fmt.Sprint(piped.events) {
		t.Fatal("the pipeline reordered or lost events")
	}
}

func TestPipelineReportsTheHandlersError(t *testing.T) {
	r := &recorder{failAt: 10}
	p := NewPipeline(context.Background(), r, 4)
	err := feed(p, 1000)
	if cerr := p.Close(); cerr == nil || cerr.Error() != "boom" {
		t.Fatalf("Close = %v", cerr)
	}
	if err == nil || err.Error() != "boom" {
		t.Fatalf("feeding went on after the handler failed: %v", err)
	}
	if len(r.events) != 10 {
		t.Errorf("the handler saw %d events after failing at the 10th", len(r.events))
	}
}

// idleRecorder records the events a Pipeline hands it; its Commit of transaction "1" waits for
// release.
type idleRecorder struct {
	events  chan string
	release chan struct{}
}

func (r *idleRecorder) Begin(_ context.Context, txn *change.Txn) error {
	r.events <- "begin " + txn.ID
	return nil
}
func (r *idleRecorder) Change(context.Context, *change.Change) error { return nil }
func (r *idleRecorder) Commit(_ context.Context, c *change.Commit) error {
	if c.Txn.ID == "1" {
		<-r.release
	}
	r.events <- "commit " + c.Txn.ID
	return nil
}
func (r *idleRecorder) Idle(context.Context) error {
	r.events <- "idle"
	return nil
}

// TestPipelineIdle: the handler hears Idle after a commit only when nothing more is queued.
func TestPipelineIdle(t *testing.T) {
	r := &idleRecorder{events: make(chan string, 100), release: make(chan struct{})}
	ctx := context.Background()
	p := NewPipeline(ctx, r, 16)
	for _, id := range []string{"1", "2"} {
		txn := &change.Txn{ID: id}
		if err := p.Begin(ctx, txn); err != nil {
			t.Fatal(err)
		}
		if err := p.Commit(ctx, &change.Commit{Txn: txn}); err != nil {
			t.Fatal(err)
		}
	}
	close(r.release) // transaction 2 is queued while 1 commits
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	close(r.events)
	var got []string
	for e := range r.events {
		got = append(got, e)
	}
	if want := "begin 1,commit 1,begin 2,commit 2,idle"; strings.Join(got, ",") != want {
		t.Errorf("events %s; want %s", strings.Join(got, ","), want)
	}
}

// TestPipelineNotIdleWithATransactionBegun: events of a transaction the source has begun but not
// ended wait in the batch being filled, not in the queue; the handler must not hear Idle while they
// do, or it would end a commit group that the next transaction was about to join.
func TestPipelineNotIdleWithATransactionBegun(t *testing.T) {
	r := &idleRecorder{events: make(chan string, 100), release: make(chan struct{})}
	ctx := context.Background()
	p := NewPipeline(ctx, r, 16)
	one, two := &change.Txn{ID: "1"}, &change.Txn{ID: "2"}
	for _, err := range []error{p.Begin(ctx, one), p.Commit(ctx, &change.Commit{Txn: one}),
		p.Begin(ctx, two), p.Change(ctx, &change.Change{Txn: two})} {
		if err != nil {
			t.Fatal(err)
		}
	}
	close(r.release) // transaction 1 commits while 2 has begun
	got := []string{<-r.events, <-r.events}
	select {
	case e := <-r.events: // the handler goes on to transaction 2 only once it is handed on
		got = append(got, e)
	case <-time.After(200 * time.Millisecond):
	}
	if err := p.Commit(ctx, &change.Commit{Txn: two}); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	close(r.events)
	for e := range r.events {
		got = append(got, e)
	}
	if want := "begin 1,commit 1,begin 2,commit 2,idle"; strings.Join(got, ",") != want {
		t.Errorf("events %s; want %s", strings.Join(got, ","), want)
	}
}

// TestPipelineCloseHandsOnABegunTransaction: Close lets the handler see the events of a transaction
// that never ended, as it did when every event was queued on its own.
func TestPipelineCloseHandsOnABegunTransaction(t *testing.T) {
	var r recorder
	ctx := context.Background()
	p := NewPipeline(ctx, &r, 4096)
	txn := &change.Txn{ID: "7"}
	if err := p.Begin(ctx, txn); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if err := p.Change(ctx, &change.Change{Txn: txn, Index: int64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if len(r.events) != 101 || r.events[0] != "B7" || r.events[100] != "C99" {
		t.Errorf("the handler saw %d events (%v ... %v), want B7 and 100 changes", len(r.events), r.events[:min(len(r.events), 1)], r.events[max(len(r.events)-1, 0):])
	}
}
