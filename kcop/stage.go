package kcop

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cdcd-dev/cdcd/change"
	"github.com/cdcd-dev/cdcd/internal/fault"
)

// Sink receives what the stage makes of a source transaction, in source order: its begin, the
// records of each of its changes, and its commit. The writer is one.
type Sink interface {
	Begin(ctx context.Context, txn *change.Txn) error
	// Records hands over the records the chain made for c, in the chain's order (possibly none).
	// The sink may keep recs until its next call; the stage does not touch them before then.
	Records(ctx context.Context, c *change.Change, recs []Record) error
	// Commit ends the transaction; closing holds the records the chain made at its commit
	// (transaction-level alerts), which follow the last change's records.
	Commit(ctx context.Context, c *change.Commit, closing []Record) error
}

// progresser is the optional interface of a Sink that takes progress without transactions (see
// capture.Progresser).
type progresser interface {
	Progress(ctx context.Context, end string) error
}

// Stage is the KCOP step between capture and the writer: it runs the chain on every change and
// hands the records to the sink, in source order, change by change. It implements the capture
// Handler (and Progresser) contract, so a source or a capture.Pipeline feeds it directly.
//
// Errors: an error the chain marks Retryable (a schema registry that timed out) is retried with
// backoff on the same change, which has handed nothing to the sink yet, so nothing is lost or
// written twice; every other error stops the pipeline as terminal, naming the change. The stage calls
// the chain from one goroutine at a time; KCOPs must still be safe for concurrent use.
type Stage struct {
	k        KCOP
	sink     Sink
	log      *slog.Logger
	bufs     [2][]Record
	next     int
	minDelay time.Duration
	maxDelay time.Duration
}

// NewStage returns a stage that runs k for sink.
func NewStage(k KCOP, sink Sink, log *slog.Logger) *Stage {
	if log == nil {
		log = slog.Default()
	}
	return &Stage{k: k, sink: sink, log: log, minDelay: 100 * time.Millisecond, maxDelay: 5 * time.Second}
}

// Begin tells the chain (when it observes transactions) and the sink of a transaction's begin.
func (s *Stage) Begin(ctx context.Context, txn *change.Txn) error {
	if o, ok := s.k.(TxnObserver); ok {
		if err := o.BeginTxn(ctx, txn); err != nil {
			return fault.Terminal("KCOP failed at the begin of transaction %s: %w", txn.ID, err)
		}
	}
	return s.sink.Begin(ctx, txn)
}

// Commit hands the sink the transaction's commit with the records the chain makes at it.
func (s *Stage) Commit(ctx context.Context, c *change.Commit) error {
	var closing []Record
	if o, ok := s.k.(TxnObserver); ok {
		buf := s.bufs[s.next][:0]
		var err error
		if closing, err = o.CommitTxn(ctx, c, buf); err != nil {
			return fault.Terminal("KCOP failed at the commit of transaction %s: %w", c.Txn.ID, err)
		}
		s.bufs[s.next] = closing
		s.next = 1 - s.next
	}
	return s.sink.Commit(ctx, c, closing)
}

// Progress passes progress to the sink when it takes it.
func (s *Stage) Progress(ctx context.Context, end string) error {
	if p, ok := s.sink.(progresser); ok {
		return p.Progress(ctx, end)
	}
	return nil
}

// Change runs the chain on c and hands its records to the sink.
func (s *Stage) Change(ctx context.Context, c *change.Change) error {
	// Two buffers in turn: the sink may hold the previous change's records until this call.
	buf := s.bufs[s.next][:0]
	delay := s.minDelay
	for attempt := 1; ; attempt++ {
		recs, err := s.k.Process(ctx, c, buf)
		if err == nil {
			s.bufs[s.next] = recs
			s.next = 1 - s.next
			return s.sink.Records(ctx, c, recs)
		}
		if !IsRetryable(err) {
			return fault.Terminal("KCOP failed on %v of %s in transaction %s (op %d): %w", c.Op, c.Table.QualifiedName(), c.Txn.ID, c.Index, err)
		}
		s.log.Warn("KCOP failed with a retryable error; retrying the change", "table", c.Table.QualifiedName(),
			"txn", c.Txn.ID, "op", c.Index, "attempt", attempt, "in", delay, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("KCOP retry of %s (op %d) stopped: %w (last error: %v)", c.Table.QualifiedName(), c.Index, ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(2*delay, s.maxDelay)
	}
}

// retryable marks an error worth retrying.
type retryable struct{ err error }

func (r retryable) Error() string { return r.err.Error() }
func (r retryable) Unwrap() error { return r.err }

// Retryable marks err as passing (a registry or service that timed out, a lost connection): the
// stage retries the change with backoff. Unmarked errors are terminal.
func Retryable(err error) error {
	if err == nil {
		return nil
	}
	return retryable{err}
}

// IsRetryable reports whether err, or an error it wraps, was marked Retryable.
func IsRetryable(err error) bool {
	var r retryable
	return errors.As(err, &r)
}
