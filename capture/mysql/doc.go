// Package mysql captures committed transactions from MySQL and MariaDB through the ROW binlog.
//
// Today it offers Check, the preflight of `cdcd validate`: log_bin, binlog_format, binlog_row_image,
// binlog_row_metadata, GTID mode (MySQL gtid_mode, MariaDB gtid_strict_mode), server ids, the user's
// replication rights and the configured tables, each reported with its fix. The binlog reader
// (Begin / Change... / Commit events with GTID and file:pos positions, column names and types as of
// the binlog position) is not written yet.
package mysql
