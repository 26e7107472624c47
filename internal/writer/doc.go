// Package writer is cdcd's transactional Kafka writer (see Writer) and the Kafka preflight of
// `cdcd validate` (see Check).
//
// Protocol: the writer groups whole source transactions into one Kafka transaction (a commit
// group), written by one idempotent, transactional producer (txnProducer: sarama's protocol layer,
// one goroutine per broker, acknowledgements per batch; parallel mode writes data records through
// sarama's AsyncProducer). Each data record carries the ordering
// headers of package bookmark. The group's last record, on the single-partition commit topic, is a
// bookmark.CommitRecord naming the group's transactions, their source positions and the offset
// ranges of their records. The Kafka transaction then commits, atomically with that record, and only
// then is the source told that the group's last position is durable.
//
// On start the writer's transactional producer fences any earlier writer with the same
// transactional id and aborts its open transaction; the last committed commit record says where the
// source resumes. So a crash at any instant loses nothing (the source was not confirmed past what
// Kafka committed) and duplicates nothing for read_committed consumers (what the crashed writer had
// not committed is aborted, and the source resumes right after what it had).
//
// The commit stream is the bookmark, so it must keep every record: the writer creates the commit
// topic with cleanup.policy=delete and no retention and refuses one that compacts or expires. A
// group also closes for the size of its commit record, which stays under MaxMessageBytes. A position
// the source passed with nothing to write (capture.Progresser) is durable only once a commit record
// carries it (one without transactions when the source is quiet); only then does OnDurable hear it.
// Errors a restart cannot cure are terminal (package fault) and name the setting to change; a
// transaction the coordinator aborted for its age is ErrTransactionTimedOut, and retried.
//
// A source transaction is never split across Kafka transactions, so read_committed consumers never
// see part of one. A long one holds its Kafka transaction open with its records already sent:
// memory stays flat, and its duration is bounded by the transaction timeout (kafka.transaction_timeout,
// capped by the broker's transaction.max.timeout.ms).
package writer
