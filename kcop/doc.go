// Package kcop will hold the Kafka custom operation processors: formatters that turn one row change,
// with its context (operation, before and after images, key columns, table, source transaction,
// commit time and position), into zero or more Kafka records, and compose into per-table chains.
// Built-ins (JSON, keyed Avro, CSV audit, tombstones, side-topic alerts) and Go plugin loading will
// live here. KCOPs see changes through a source-neutral type and never import a capture package.
//
// Nothing is implemented yet.
package kcop
