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
// queue of depth events: the source's reading and decoding overlap with h's work, and the queue is the
// backpressure. The first error h returns is returned by the calls after it, and by Close. Calls to
// h use ctx without its cancellation, so that Close can let h finish what was queued.
type Pipeline struct {
	h    Handler
	ctx  context.Context
	ch   chan event
	done chan struct{}
	mu   sync.Mutex
	err  error
}

var (
	_ Handler    = (*Pipeline)(nil)
	_ Progresser = (*Pipeline)(nil)
)

// NewPipeline starts the goroutine that calls h.
func NewPipeline(ctx context.Context, h Handler, depth int) *Pipeline {
	p := &Pipeline{h: h, ctx: context.WithoutCancel(ctx), ch: make(chan event, max(depth, 1)), done: make(chan struct{})}
	go p.run()
	return p
}

func (p *Pipeline) run() {
	defer close(p.done)
	for ev := range p.ch {
		if p.failed() != nil {
			continue // drain, so that senders never block on a dead consumer
		}
		var err error
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
		if err == nil && (ev.kind == evCommit || ev.kind == evProgress) && len(p.ch) == 0 {
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
}

func (p *Pipeline) failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

func (p *Pipeline) send(ctx context.Context, ev event) error {
	if err := p.failed(); err != nil {
		return err
	}
	select {
	case p.ch <- ev:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Begin implements Handler.
func (p *Pipeline) Begin(ctx context.Context, txn *change.Txn) error {
	return p.send(ctx, event{kind: evBegin, txn: txn})
}

// Change implements Handler.
func (p *Pipeline) Change(ctx context.Context, c *change.Change) error {
	return p.send(ctx, event{kind: evChange, change: c})
}

// Commit implements Handler.
func (p *Pipeline) Commit(ctx context.Context, c *change.Commit) error {
	return p.send(ctx, event{kind: evCommit, commit: c})
}

// Progress implements Progresser; it reaches h only when h implements Progresser.
func (p *Pipeline) Progress(ctx context.Context, end, state string) error {
	return p.send(ctx, event{kind: evProgress, end: end, state: state})
}

// Close lets h finish the queued events and returns h's first error. No call may follow it.
func (p *Pipeline) Close() error {
	close(p.ch)
	<-p.done
	return p.failed()
}
