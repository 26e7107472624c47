package kcop

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cdcd-dev/cdcd/change"
	"github.com/cdcd-dev/cdcd/internal/fault"
)

// holdingSink keeps the previous change's records until the next call, as the writer does, and checks
// that they did not change meanwhile.
type holdingSink struct {
	t       *testing.T
	held    []Record
	heldVal []string
	got     []string
}

func (s *holdingSink) Begin(context.Context, *change.Txn) error { return nil }
func (s *holdingSink) Commit(context.Context, *change.Commit, []Record) error {
	s.check()
	return nil
}
func (s *holdingSink) Records(_ context.Context, c *change.Change, recs []Record) error {
	s.check()
	s.held, s.heldVal = recs, nil
	for _, r := range recs {
		s.heldVal = append(s.heldVal, string(r.Value))
		s.got = append(s.got, string(r.Value))
	}
	return nil
}

func (s *holdingSink) check() {
	for i, r := range s.held {
		if string(r.Value) != s.heldVal[i] {
			s.t.Errorf("a held record changed under the sink: %q became %q", s.heldVal[i], r.Value)
		}
	}
}

// flaky fails with err on its first failures calls, then writes one record per change.
type flaky struct {
	failures int
	err      error
	calls    int
}

func (f *flaky) Process(_ context.Context, c *change.Change, dst []Record) ([]Record, error) {
	f.calls++
	if f.calls <= f.failures {
		return append(dst, Record{Value: []byte("half-made")}), f.err
	}
	return append(dst, Record{Topic: "t", Value: []byte(fmt.Sprint(c.Index))}), nil
}

func stageChange(i int64) *change.Change {
	return &change.Change{Op: change.Insert, Table: &change.Table{Schema: "s", Name: "t"}, Txn: &change.Txn{ID: "7"}, Index: i}
}

func TestStageRetriesRetryableErrorsWithoutDuplicates(t *testing.T) {
	k := &flaky{failures: 3, err: Retryable(errors.New("registry timed out"))}
	sink := &holdingSink{t: t}
	s := NewStage(k, sink, nil)
	s.minDelay, s.maxDelay = time.Millisecond, 4*time.Millisecond
	for i := range int64(3) {
		if err := s.Change(context.Background(), stageChange(i)); err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Join(sink.got, ","); got != "0,1,2" {
		t.Errorf("the sink got %s, want each change's record once: 0,1,2", got)
	}
	if k.calls != 6 {
		t.Errorf("the KCOP was called %d times, want 3 failures and 3 successes", k.calls)
	}
}

func TestStageStopsOnTerminalErrors(t *testing.T) {
	for name, err := range map[string]error{"unmarked": errors.New("bad rule"), "wrapped": fmt.Errorf("rule x: %w", errors.New("bad"))} {
		sink := &holdingSink{t: t}
		s := NewStage(&flaky{failures: 1, err: err}, sink, nil)
		got := s.Change(context.Background(), stageChange(4))
		if !fault.IsTerminal(got) || !strings.Contains(got.Error(), "s.t") || !strings.Contains(got.Error(), "op 4") || !errors.Is(got, err) {
			t.Errorf("%s: err = %v, want a terminal error naming the table and op, wrapping the KCOP's", name, got)
		}
		if len(sink.got) != 0 {
			t.Errorf("%s: the sink got %v from a failed change", name, sink.got)
		}
	}
}

func TestStageRetryEndsWithTheContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	s := NewStage(&flaky{failures: 1 << 30, err: Retryable(errors.New("down"))}, &holdingSink{t: t}, nil)
	s.minDelay = time.Millisecond
	err := s.Change(ctx, stageChange(0))
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || fault.IsTerminal(err) {
		t.Errorf("err = %v, want the context's end, not terminal", err)
	}
}

// TestStageKeepsHeldRecords: the sink may hold a change's records until its next call; the stage
// makes the next change's records elsewhere.
func TestStageKeepsHeldRecords(t *testing.T) {
	sink := &holdingSink{t: t}
	s := NewStage(&flaky{}, sink, nil)
	for i := range int64(5) {
		if err := s.Change(context.Background(), stageChange(i)); err != nil {
			t.Fatal(err)
		}
	}
}
