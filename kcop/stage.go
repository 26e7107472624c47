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
	Progress(ctx context.Context, end, state string) error
}

// Stage is the KCOP step between capture and the writer: it runs the chain on every change and
// hands the records to the sink, in source order, change by change. It implements the capture
// Handler (and Progresser) contract, so a source or a capture.Pipeline feeds it directly.
//
// Errors: an error the chain marks Retryable (a schema registry that timed out) is retried with
// backoff on the same change, which has handed nothing to the sink yet, so nothing is lost or
// written twice; every other error stops the pipeline as terminal, naming the change.
//
// Parallelism: with SetWorkers(n > 1) the chain runs on up to n changes of a transaction at once, and
// the stage still hands the sink every change's records in source order (so each partition keeps its
// order); Begin and Commit wait for the transaction's changes, so the transaction observers see a
// transaction's begin before any of its changes and its commit after all of them. With one worker
// (the default) the chain is called from one goroutine at a time; KCOPs must be safe for concurrent
// use either way.
type Stage struct {
	k        KCOP
	sink     Sink
	log      *slog.Logger
	bufs     [2][]Record
	next     int
	minDelay time.Duration
	maxDelay time.Duration

	// With more than one worker: the changes in flight, in source order, and a semaphore of workers.
	workers int
	sem     chan struct{}
	pending []*stageJob
	free    [][]Record // record slices the sink has let go of
	held    []Record   // the slice handed to the sink last, held until its next call
}

// stageJob is one change the chain runs on in a goroutine of its own.
type stageJob struct {
	c    *change.Change
	done chan struct{}
	recs []Record
	err  error
}

// NewStage returns a stage that runs k for sink.
func NewStage(k KCOP, sink Sink, log *slog.Logger) *Stage {
	if log == nil {
		log = slog.Default()
	}
	return &Stage{k: k, sink: sink, log: log, minDelay: 100 * time.Millisecond, maxDelay: 5 * time.Second, workers: 1}
}

// SetWorkers sets how many changes of a transaction the chain may run on at once (at least 1); call
// it before the stage's first use.
func (s *Stage) SetWorkers(n int) {
	s.workers = max(n, 1)
	if s.workers > 1 {
		s.sem = make(chan struct{}, s.workers)
	}
}

// Begin tells the chain (when it observes transactions) and the sink of a transaction's begin.
func (s *Stage) Begin(ctx context.Context, txn *change.Txn) error {
	if err := s.drain(ctx, 0); err != nil {
		return err
	}
	if o, ok := s.k.(TxnObserver); ok {
		if err := o.BeginTxn(ctx, txn); err != nil {
			return fault.Terminal("KCOP failed at the begin of transaction %s: %w", txn.ID, err)
		}
	}
	return s.sink.Begin(ctx, txn)
}

// Commit hands the sink the transaction's commit with the records the chain makes at it.
func (s *Stage) Commit(ctx context.Context, c *change.Commit) error {
	if err := s.drain(ctx, 0); err != nil {
		return err
	}
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

// Idle implements capture.Idler: it tells the sink, when the sink wants to know, that the source
// has handed on everything it read. Commit and Progress drain the workers, so the sink has
// everything too.
func (s *Stage) Idle(ctx context.Context) error {
	if i, ok := s.sink.(interface{ Idle(context.Context) error }); ok {
		return i.Idle(ctx)
	}
	return nil
}

// Progress passes progress to the sink when it takes it.
func (s *Stage) Progress(ctx context.Context, end, state string) error {
	if err := s.drain(ctx, 0); err != nil {
		return err
	}
	if p, ok := s.sink.(progresser); ok {
		return p.Progress(ctx, end, state)
	}
	return nil
}

// Change runs the chain on c and hands its records to the sink (with several workers, possibly at
// a later call, always in source order).
func (s *Stage) Change(ctx context.Context, c *change.Change) error {
	if s.workers > 1 {
		return s.submit(ctx, c)
	}
	// Two buffers in turn: the sink may hold the previous change's records until this call.
	recs, err := s.process(ctx, c, s.bufs[s.next][:0])
	if err != nil {
		return err
	}
	s.bufs[s.next] = recs
	s.next = 1 - s.next
	return s.sink.Records(ctx, c, recs)
}

// submit starts the chain on c in a goroutine once a worker is free, and hands the sink the records
// of the changes before it that are done, keeping at most four changes per worker in flight.
func (s *Stage) submit(ctx context.Context, c *change.Change) error {
	if err := s.drain(ctx, 4*s.workers-1); err != nil {
		return err
	}
	job := &stageJob{c: c, done: make(chan struct{})}
	if n := len(s.free); n > 0 {
		job.recs, s.free = s.free[n-1][:0], s.free[:n-1]
	}
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	go func() {
		defer close(job.done)
		defer func() { <-s.sem }()
		job.recs, job.err = s.process(ctx, job.c, job.recs)
	}()
	s.pending = append(s.pending, job)
	for len(s.pending) > 0 && s.pending[0].finished() {
		if err := s.emit(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (j *stageJob) finished() bool {
	select {
	case <-j.done:
		return true
	default:
		return false
	}
}

// drain hands the sink the records of the changes in flight, in order, until at most keep remain.
func (s *Stage) drain(ctx context.Context, keep int) error {
	for len(s.pending) > keep {
		select {
		case <-s.pending[0].done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if err := s.emit(ctx); err != nil {
			return err
		}
	}
	return nil
}

// emit hands the sink the records of the first change in flight, which is done.
func (s *Stage) emit(ctx context.Context) error {
	job := s.pending[0]
	s.pending[0] = nil
	s.pending = s.pending[1:]
	if job.err != nil {
		return job.err
	}
	// The sink may hold the slice it had last until this call.
	if s.held != nil {
		s.free = append(s.free, s.held)
	}
	s.held = job.recs
	return s.sink.Records(ctx, job.c, job.recs)
}

// process runs the chain on c, retrying what it marks Retryable.
func (s *Stage) process(ctx context.Context, c *change.Change, buf []Record) ([]Record, error) {
	delay := s.minDelay
	for attempt := 1; ; attempt++ {
		recs, err := s.k.Process(ctx, c, buf[:0])
		if err == nil {
			return recs, nil
		}
		if !IsRetryable(err) {
			return buf, fault.Terminal("KCOP failed on %v of %s in transaction %s (op %d): %w", c.Op, c.Table.QualifiedName(), c.Txn.ID, c.Index, err)
		}
		s.log.Warn("KCOP failed with a retryable error; retrying the change", "table", c.Table.QualifiedName(),
			"txn", c.Txn.ID, "op", c.Index, "attempt", attempt, "in", delay, "err", err)
		select {
		case <-ctx.Done():
			return buf, fmt.Errorf("KCOP retry of %s (op %d) stopped: %w (last error: %v)", c.Table.QualifiedName(), c.Index, ctx.Err(), err)
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
