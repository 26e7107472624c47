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

// Progresser is an optional interface of a Handler. Progress says that the source has read its log
// up to end (a position like Commit.End) and found nothing for the handler since the last Commit;
// state is the source's state there, as Commit.State. A handler that makes end durable and then
// acknowledges it lets the source be confirmed past log that held nothing for it (heartbeats, other
// tables' transactions), so the source does not keep that log.
type Progresser interface {
	Progress(ctx context.Context, end, state string) error
}

// Resume is where a source continues: after Position (an earlier Commit.End or Progress end), which
// was read on Lineage (the source's line of history at the time, e.g. PostgreSQL's timeline), with
// State (the Commit.State that went with it, e.g. a snapshot in progress). The zero Resume starts the
// source as configured.
type Resume struct {
	Position string
	Lineage  string
	State    string
}

// Source is a running reader of one source database.
type Source interface {
	// Run streams transactions that commit after from to h until ctx ends or an error occurs. Before
	// streaming it proves that the source still holds everything after from (same server, same line
	// of history, nothing confirmed past it); where it cannot, it returns an error that names the gap.
	Run(ctx context.Context, from Resume, h Handler) error
	// SourceID names what is captured (server identity, database, slot or replica id); the commit
	// stream records it, and a start against another source is refused.
	SourceID() string
	// Lineage is the source's current line of history, recorded with every durable position.
	Lineage() string
	// Ack tells the source that everything up to and including the transaction that ended at end
	// (a Commit.End) is durable; it may be called from any goroutine.
	Ack(end string) error
	// Close releases the source's connections.
	Close(ctx context.Context) error
}
