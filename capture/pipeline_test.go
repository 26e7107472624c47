package capture

import (
	"context"
	"errors"
	"fmt"
	"testing"

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
