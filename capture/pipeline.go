package capture

import (
	"context"
	"sync"

	"github.com/cdcd-dev/cdcd/change"
)

type eventKind uint8

const (
	evBegin eventKind = iota
	evChange
	evCommit
	evProgress
)

type event struct {
	kind   eventKind
	txn    *change.Txn
	change *change.Change
	commit *change.Commit
	end    string
	state  string
}

// Idler is an optional interface of a Handler: told when the source has handed on everything it
// has read so far (at a transaction's end), so that work held back for company, such as an open
// commit group, need not wait.
type Idler interface {
	Idle(ctx context.Context) error
}

// Pipeline is a Handler that hands events, in order, to h on a goroutine of its own, through a
// queue of about depth events: the source's reading and decoding overlap with h's work, and the
// queue is the backpressure. Events travel in batches of up to batchSize, each transaction's end
// (Commit, Progress) closing one, so that a channel operation is not paid per row. The first error h
// returns is returned by the calls after it, and by Close. Calls to h use ctx without its
// cancellation, so that Close can let h finish what was queued.
type Pipeline struct {
	h    Handler
	ctx  context.Context
	ch   chan []event
	free chan []event // handled batches, for reuse
	done chan struct{}

	pendingMu sync.Mutex
	pending   []event // the batch being filled

	mu  sync.Mutex
	err error
}

// batchSize bounds a batch. A transaction's end always closes its batch, so a batch holds no more
// than one transaction's end: after a small transaction the handler hears of it as soon as before.
const batchSize = 64

var (
	_ Handler    = (*Pipeline)(nil)
	_ Progresser = (*Pipeline)(nil)
)

// NewPipeline starts the goroutine that calls h.
func NewPipeline(ctx context.Context, h Handler, depth int) *Pipeline {
	batches := max(depth/batchSize, 1)
	p := &Pipeline{h: h, ctx: context.WithoutCancel(ctx), ch: make(chan []event, batches),
		free: make(chan []event, batches+2), done: make(chan struct{})}
	go p.run()
	return p
}

func (p *Pipeline) run() {
	defer close(p.done)
	var err error
	for batch := range p.ch {
		for _, ev := range batch {
			if err != nil {
				break // drain, so that senders never block on a dead consumer
			}
			switch ev.kind {
			case evBegin:
				err = p.h.Begin(p.ctx, ev.txn)
			case evChange:
				err = p.h.Change(p.ctx, ev.change)
			case evCommit:
				err = p.h.Commit(p.ctx, ev.commit)
			case evProgress:
				if pr, ok := p.h.(Progresser); ok {
					err = pr.Progress(p.ctx, ev.end, ev.state)
				}
			}
			if err == nil && (ev.kind == evCommit || ev.kind == evProgress) && len(p.ch) == 0 && p.nothingPending() {
				if i, ok := p.h.(Idler); ok {
					err = i.Idle(p.ctx)
				}
			}
			if err != nil {
				p.mu.Lock()
				p.err = err
				p.mu.Unlock()
			}
		}
		clear(batch) // the events' changes are garbage once handled
		select {
		case p.free <- batch[:0]:
		default:
		}
	}
}

func (p *Pipeline) nothingPending() bool {
	p.pendingMu.Lock()
	defer p.pendingMu.Unlock()
	return len(p.pending) == 0
}

func (p *Pipeline) failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// add appends ev to the batch being filled, and hands the batch on when it is full or end is set.
func (p *Pipeline) add(ctx context.Context, ev event, end bool) error {
	if err := p.failed(); err != nil {
		return err
	}
	p.pendingMu.Lock()
	if p.pending == nil {
		select {
		case p.pending = <-p.free:
		default:
			p.pending = make([]event, 0, batchSize)
		}
	}
	p.pending = append(p.pending, ev)
	if !end && len(p.pending) < batchSize {
		p.pendingMu.Unlock()
		return nil
	}
	batch := p.pending
	p.pending = nil
	p.pendingMu.Unlock()
	select {
	case p.ch <- batch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Begin implements Handler.
func (p *Pipeline) Begin(ctx context.Context, txn *change.Txn) error {
	return p.add(ctx, event{kind: evBegin, txn: txn}, false)
}

// Change implements Handler.
func (p *Pipeline) Change(ctx context.Context, c *change.Change) error {
	return p.add(ctx, event{kind: evChange, change: c}, false)
}

// Commit implements Handler.
func (p *Pipeline) Commit(ctx context.Context, c *change.Commit) error {
	return p.add(ctx, event{kind: evCommit, commit: c}, true)
}

// Progress implements Progresser; it reaches h only when h implements Progresser.
func (p *Pipeline) Progress(ctx context.Context, end, state string) error {
	return p.add(ctx, event{kind: evProgress, end: end, state: state}, true)
}

// Close lets h finish the queued events, those of a transaction not yet ended included, and
// returns h's first error. No call may follow it.
func (p *Pipeline) Close() error {
	p.pendingMu.Lock()
	last := p.pending
	p.pending = nil
	p.pendingMu.Unlock()
	if len(last) > 0 && p.failed() == nil {
		p.ch <- last // not under pendingMu: the handler's goroutine takes it to decide on Idle
	}
	close(p.ch)
	<-p.done
	return p.failed()
}
