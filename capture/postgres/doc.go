// Package postgres captures committed transactions from PostgreSQL through logical replication
// with the pgoutput plugin.
//
// Today it offers Check, the preflight of `cdcd validate`: server settings, the role's rights, the
// replication connection, the configured tables, the publication and the slot, each reported with
// its fix. The stream reader (Begin / Change... / Commit events in commit order, the slot's
// confirmed_flush_lsn advanced only past data that Kafka holds durably, a consistent initial snapshot
// from the slot's exported snapshot) is not written yet.
package postgres
