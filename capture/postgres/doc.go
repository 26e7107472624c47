// Package postgres captures committed transactions from PostgreSQL through logical replication
// with the pgoutput plugin (protocol 1: whole committed transactions, in commit order).
//
// Reader owns the replication connection on the goroutine that calls Run and hands each transaction
// to a capture.Handler as Begin / Change... / Commit; the handler's return is the backpressure. It
// promises:
//
//   - the slot's confirmed_flush_lsn never passes a position the handler has not acknowledged with
//     Ack (the end LSN of a commit record); a commit that held nothing for the handler (a heartbeat)
//     is offered as capture.Progresser.Progress, so a handler that makes it durable lets a quiet
//     publication on a busy server advance without pinning WAL;
//   - Run resumes only where it can prove continuity: the server is the one the position was read
//     from (SourceID holds its system identifier), its timeline branched off at or after the position
//     (Lineage, the timeline history), and the slot is not confirmed past it; otherwise it returns a
//     terminal error wrapping ErrGap that names the gap and the fix;
//   - the key columns of each change are the replica identity columns the stream flags at that
//     position (the catalog only fills in the primary key under FULL or NOTHING), so a backlog read
//     after a key change or a DROP TABLE keeps its keys;
//   - a fresh slot with snapshot "initial" is followed by one snapshot transaction of Read changes,
//     copied from the slot's exported snapshot, so the stream continues with no gap and no overlap;
//   - values are decoded from text with pinned session settings (DateStyle, IntervalStyle, TimeZone,
//     extra_float_digits, bytea_output) through pgtype; numeric stays exact; types it does not know
//     (enums, geometric, range, user-defined) arrive as their text form;
//   - an unchanged TOAST value is filled in from the old row under REPLICA IDENTITY FULL and marked
//     change.Unchanged otherwise, never NULL; non-key columns of a key-only old row are change.Absent;
//   - a Relation message (a new table, or one after ALTER TABLE) replaces the table's shape before
//     its next change; TRUNCATE of several tables arrives as one Truncate change per table.
//
// Check is the preflight of `cdcd validate` (and of Open): every prerequisite, each missing one
// reported with its fix.
package postgres
