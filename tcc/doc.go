// Package tcc will be the transactionally consistent consumer: it reads cdcd's commit stream and the
// data topics it names, drops every record the commit stream does not vouch for, and hands the
// application whole source transactions in exact source order, each operation once, with a bookmark
// per transaction and per operation from which a consumer resumes. It depends on bookmark and a Kafka
// client only, never on capture, kcop or a database driver.
//
// Nothing is implemented yet.
package tcc
