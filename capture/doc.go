// Package capture is the source side of cdcd: one reader per source database (capture/postgres,
// capture/mysql) that owns its replication connection and turns the database's log into a stream of
// Begin / Change... / Commit events in commit order, never a whole transaction at once, and advances
// the source's confirmed position only past what Kafka holds durably.
//
// So far the readers offer only their preflight checks (`cdcd validate`); the event stream is not
// implemented yet.
package capture
