// Package mysql captures committed transactions from MariaDB and MySQL through the ROW binlog, as a
// replica does (go-mysql's BinlogSyncer), and registers the source kinds "mariadb" and "mysql".
//
// What it promises:
//   - Positions are the executed GTID set after a transaction (MariaDB "domain-server-seq" lists,
//     MySQL "uuid:1-n" sets) with the binlog file and offset, or file and offset alone when GTIDs
//     are off (Position). An XID event, or the COMMIT statement of non-transactional tables, ends a
//     transaction; a statement outside a transaction (DDL) is one of its own. Transactions without a
//     captured change are offered as progress, so the commit stream moves past them.
//   - A start resumes exactly after the commit stream's last transaction. A server whose binlogs no
//     longer hold that position is a terminal error naming the gap (ErrGap), never a skip; the
//     server's identity (MariaDB server id and GTID domain, MySQL server uuid) is part of the source
//     id, so a commit stream is never continued against another server.
//   - Column names, types, signedness, character sets, ENUM and SET members and the primary key come
//     from each table map event (binlog_row_metadata=FULL, refused otherwise), so every change is
//     labelled with the columns its table had when it was written, DDL made while cdcd was down
//     included, with no schema history to keep.
//   - Values are exact: unsigned 64-bit integers stay unsigned, decimals keep their declared scale,
//     FLOAT stays 32-bit, BINARY(n) keeps its trailing zero bytes, TIME keeps its fraction digits,
//     TIMESTAMP is an instant in UTC, latin1 is read as Windows-1252, zero dates stay as the server
//     writes them; MariaDB's JSON (a LONGTEXT) is text.
//   - The initial snapshot (snapshot: initial) reads every captured table inside one consistent read
//     and streams from exactly the binlog position of that read: on MariaDB without a global lock
//     (binlog_snapshot_file/position), on MySQL under FLUSH TABLES WITH READ LOCK only while the read
//     view opens.
//
// Check is the preflight of `cdcd validate` and of every start: log_bin, binlog_format=ROW,
// binlog_row_image=FULL, binlog_row_metadata=FULL, GTID mode, server ids, the user's rights and the
// configured tables, each reported with its fix.
package mysql
