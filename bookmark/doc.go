// Package bookmark will hold cdcd's typed, versioned, comparable positions: source positions
// (PostgreSQL LSNs, MySQL and MariaDB GTID sets, binlog file:pos), cdcd's commit-stream bookmark and
// the consumer bookmarks the tcc hands out, each with a text and a binary form, plus helpers that
// store a consumer bookmark durably. It imports nothing else of cdcd.
//
// Nothing is implemented yet.
package bookmark
