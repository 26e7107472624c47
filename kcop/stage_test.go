package kcop

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
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

// slowObserver takes a random while per change, counts how many run at once, and checks that a
// transaction's begin comes before and its commit after every one of its changes.
type slowObserver struct {
	t                    *testing.T
	mu                   sync.Mutex
	running, most        int
	begun                map[string]bool
	processed, committed map[string]int
	failAt               int64 // an index that fails terminally; -1 for none
}

func (k *slowObserver) Process(_ context.Context, c *change.Change, dst []Record) ([]Record, error) {
	k.mu.Lock()
	k.running++
	k.most = max(k.most, k.running)
	if !k.begun[c.Txn.ID] {
		k.t.Errorf("change %d of transaction %s before its begin", c.Index, c.Txn.ID)
	}
	k.mu.Unlock()
	time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
	k.mu.Lock()
	k.running--
	k.processed[c.Txn.ID]++
	k.mu.Unlock()
	if c.Index == k.failAt {
		return dst, errors.New("bad rule")
	}
	return append(dst, Record{Topic: "t", Value: []byte(fmt.Sprintf("%s/%d", c.Txn.ID, c.Index))}), nil
}

func (k *slowObserver) BeginTxn(_ context.Context, txn *change.Txn) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.begun[txn.ID] = true
	return nil
}

func (k *slowObserver) CommitTxn(_ context.Context, c *change.Commit, dst []Record) ([]Record, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if int64(k.processed[c.Txn.ID]) != c.Changes {
		k.t.Errorf("transaction %s committed after %d of its %d changes", c.Txn.ID, k.processed[c.Txn.ID], c.Changes)
	}
	k.committed[c.Txn.ID]++
	return append(dst, Record{Topic: "t", Value: []byte(c.Txn.ID + "/commit")}), nil
}

// orderSink records what it is handed, as the held-records sink does, plus begins and commits.
type orderSink struct {
	holdingSink
}

func (s *orderSink) Begin(_ context.Context, txn *change.Txn) error {
	s.got = append(s.got, txn.ID+"/begin")
	return nil
}

func (s *orderSink) Commit(ctx context.Context, c *change.Commit, closing []Record) error {
	return s.Records(ctx, nil, closing)
}

// TestStageParallelKeepsOrder: with several workers the chain runs on several changes at once, and
// the sink still gets every record in source order, each transaction whole between its begin and its
// commit; a terminal error stops the stage with nothing after it handed on.
func TestStageParallelKeepsOrder(t *testing.T) {
	k := &slowObserver{t: t, begun: map[string]bool{}, processed: map[string]int{}, committed: map[string]int{}, failAt: -1}
	sink := &orderSink{holdingSink{t: t}}
	s := NewStage(Chain{k}, sink, nil)
	s.SetWorkers(4)
	ctx := context.Background()
	var want []string
	for n := range 20 {
		txn := &change.Txn{ID: fmt.Sprint(100 + n)}
		if err := s.Begin(ctx, txn); err != nil {
			t.Fatal(err)
		}
		want = append(want, txn.ID+"/begin")
		changes := 1 + rand.IntN(60)
		for i := range changes {
			c := &change.Change{Op: change.Insert, Table: &change.Table{Schema: "s", Name: "t"}, Txn: txn, Index: int64(i)}
			if err := s.Change(ctx, c); err != nil {
				t.Fatal(err)
			}
			want = append(want, fmt.Sprintf("%s/%d", txn.ID, i))
		}
		if err := s.Commit(ctx, &change.Commit{Txn: txn, Changes: int64(changes)}); err != nil {
			t.Fatal(err)
		}
		want = append(want, txn.ID+"/commit")
	}
	if !slices.Equal(sink.got, want) {
		t.Errorf("the sink got\n%v\nwant\n%v", sink.got, want)
	}
	if k.most < 2 || k.most > 4 {
		t.Errorf("at most %d changes ran at once, want 2 to 4", k.most)
	}

	// A terminal error: the changes before it reach the sink, it and those after do not.
	k = &slowObserver{t: t, begun: map[string]bool{"1": true}, processed: map[string]int{}, committed: map[string]int{}, failAt: 5}
	sink = &orderSink{holdingSink{t: t}}
	s = NewStage(k, sink, nil)
	s.SetWorkers(3)
	txn := &change.Txn{ID: "1"}
	var err error
	for i := int64(0); i < 40 && err == nil; i++ {
		err = s.Change(ctx, &change.Change{Op: change.Insert, Table: &change.Table{Schema: "s", Name: "t"}, Txn: txn, Index: i})
	}
	if err == nil {
		err = s.Commit(ctx, &change.Commit{Txn: txn, Changes: 40})
	}
	if !fault.IsTerminal(err) || !strings.Contains(err.Error(), "op 5") {
		t.Errorf("err = %v, want the terminal error of op 5", err)
	}
	if want := []string{"1/0", "1/1", "1/2", "1/3", "1/4"}; !slices.Equal(sink.got, want) {
		t.Errorf("the sink got %v, want %v", sink.got, want)
	}
}
