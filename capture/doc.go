// Package capture is the source side of cdcd: one reader per source database (capture/postgres,
// capture/mysql) that owns its replication connection on one goroutine and turns the database's log
// into Begin / Change... / Commit calls on a Handler, in commit order, never a whole transaction at
// once. The Handler's return is the backpressure: the reader reads no further until it returns.
//
// A reader confirms a position to the source (so the source may discard its log up to there) only
// after Ack says that everything up to that position is durable downstream.
package capture

import (
	"context"

	"github.com/cdcd-dev/cdcd/change"
)

// Handler receives a source's transactions. Each call may block; an error stops the reader, which
// returns it from Run.
type Handler interface {
	Begin(ctx context.Context, txn *change.Txn) error
	Change(ctx context.Context, c *change.Change) error
	Commit(ctx context.Context, c *change.Commit) error
}

// Source is a running reader of one source database.
type Source interface {
	// Run streams transactions that commit after resume (a position from an earlier Commit.End, or
	// "" for the start the source is configured for) to h until ctx ends or an error occurs.
	Run(ctx context.Context, resume string, h Handler) error
	// Ack tells the source that everything up to and including the transaction that ended at end
	// (a Commit.End) is durable; it may be called from any goroutine.
	Ack(end string) error
	// Close releases the source's connections.
	Close(ctx context.Context) error
}
