// Package writer is cdcd's transactional Kafka writer: it stamps data records with ordering headers,
// writes one commit stream record per commit group, and tells capture which source positions Kafka
// holds durably.
//
// Today it offers Check, the Kafka half of `cdcd validate`: brokers reachable and transactions
// usable. The writer itself is not written yet.
package writer
